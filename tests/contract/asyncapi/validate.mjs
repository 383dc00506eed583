// Parse an AsyncAPI document with @asyncapi/parser and print its diagnostics, one JSON object a line.
// Exit 1 when the parser reports an error (severity 0) or builds no document.
// Usage: node validate.mjs FILE   (NODE_PATH or a node_modules next to this file finds the parser)
import { Parser } from '@asyncapi/parser';
import fs from 'node:fs';

const text = fs.readFileSync(process.argv[2], 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
for (const d of diagnostics) {
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path.join('.') }));
}
const errors = diagnostics.filter((d) => d.severity === 0).length;
console.log(JSON.stringify({ errors, document: Boolean(document) }));
process.exit(errors || !document ? 1 : 0);
