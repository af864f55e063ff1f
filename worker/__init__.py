"""dupfinder's worker: hashes uploads, finds duplicate sets and carries out commands.

The pure core (`hashing`, `grouping`, `deletion`, `pages`) does no I/O; `fetching`, `store` and
`results` are the edges; `actors` wires them to Dramatiq; `cli` is the command line.
"""

__version__ = "0.1.0"
