// Parses an AsyncAPI document (a file, or standard input) with @asyncapi/parser and prints its
// diagnostics as JSON, one object a line; exits 1 when any is an error or the document does
// not parse. Used by tests/tests/asyncapi.rs.
import { readFileSync } from 'node:fs';
import { Parser } from '@asyncapi/parser';

const text = readFileSync(process.argv[2] ?? 0, 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
for (const d of diagnostics) {
  // Spectral's severities: 0 error, 1 warning, 2 information, 3 hint.
  console.log(JSON.stringify({ severity: d.severity, code: d.code, message: d.message, path: d.path }));
}
const errors = diagnostics.filter((d) => d.severity === 0);
if (!document || errors.length > 0) {
  process.exit(1);
}
console.log(JSON.stringify({ channels: document.channels().all().map((c) => c.address()) }));
