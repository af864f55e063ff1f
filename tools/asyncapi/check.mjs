// Parses an AsyncAPI document with the official parser and prints every diagnostic as JSON
// lines: {"severity": 0-3, "code", "message", "path"} (0 = error, 1 = warning, 2 = info,
// 3 = hint). Exit status 0 once parsed, whatever the diagnostics; the caller judges them.
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const [, , path] = process.argv;
const parser = new Parser();
const { diagnostics } = await parser.parse(await readFile(path, "utf8"));
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path.join(".") }));
}
