"""The pure core: hashing, matching, grouping, original-picking, decisions and merging as plain
functions over bytes, ints and arrays. Nothing here does I/O or imports from outside this
package (a test fails when it does); the actors, the store and the CLI call it."""
