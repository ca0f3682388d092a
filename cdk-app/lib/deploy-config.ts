// Reads and checks a deploy.json against the JSON Schemas of functions/core/schemas/ (the one
// contract the portal writes and the pipeline validates), so a malformed document fails the
// synth before anything is deployed.
import * as fs from 'fs';
import * as path from 'path';
import { isDeepStrictEqual } from 'util';

export const SCHEMA_DIR = path.join(__dirname, '..', '..', 'functions', 'core', 'schemas');

export type Action = 'deploy' | 'destroy';

export interface ProducerDeploy {
  /** Absent in documents of the first release, which are format 1 (functions/core/src/format.rs). */
  format_version?: number;
  kind: 'producer';
  action: Action;
  deployment_id: string;
  application: string;
  event_type: string;
  version: number;
  description: string;
  connection_type: 'HTTPS' | 'SQS';
  source: string;
  detail_type: string;
  stack_name: string;
  schema: Record<string, unknown>;
}

export interface ConsumerDeploy {
  /** Absent in documents of the first release, which are format 1 (functions/core/src/format.rs). */
  format_version?: number;
  kind: 'consumer';
  action: Action;
  deployment_id: string;
  subscription_id: string;
  application: string;
  event_type: string;
  version: number;
  target_unit: string;
  connection_type: 'HTTPS' | 'LAMBDA' | 'SQS';
  connection_string: string;
  retry_policy: { maximum_retry_attempts: number; maximum_event_age_seconds: number };
  /** The bus the stack is built for; absent, the platform's (the consumer build's `busKind`). */
  bus_kind?: 'custom' | 'classic';
  /**
   * Unix seconds: the subscription's latest replay start (format 3), where its Custom Event Bus
   * subscriber starts; absent, it starts at the newest event.
   */
  replay_from?: number;
  /** The local host's flow control (format 2); EventBridge targets do not read it. */
  delivery?: { max_in_flight: number; invocation_rate_limit_per_second?: number };
  source: string;
  detail_type: string;
  event_pattern: Record<string, unknown>;
  rule_name: string;
  stack_name: string;
}

export type DeployDoc = ProducerDeploy | ConsumerDeploy;

type Schema = Record<string, any>;

function loadSchema(kind: 'producer' | 'consumer'): Schema {
  return JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, `${kind}-deploy.schema.json`), 'utf8'));
}

// The subset of JSON Schema the two deploy.json schemas use; any other keyword is refused so a
// schema change cannot be silently ignored here.
const KNOWN = new Set(['$schema', '$id', 'title', 'description', 'type', 'additionalProperties',
  'required', 'properties', 'definitions', '$ref', 'const', 'enum', 'pattern', 'minimum', 'maximum',
  'minLength', 'maxLength']);

function check(value: unknown, schema: Schema, root: Schema, at: string, errors: string[]): void {
  for (const k of Object.keys(schema)) {
    if (!KNOWN.has(k)) throw new Error(`deploy.json schema keyword ${k} at ${at} is not supported by the generator`);
  }
  if (schema.$ref) {
    const name = String(schema.$ref).replace('#/definitions/', '');
    return check(value, root.definitions[name], root, at, errors);
  }
  if (schema.const !== undefined && value !== schema.const) errors.push(`${at}: must be ${JSON.stringify(schema.const)}`);
  if (schema.enum && !schema.enum.includes(value)) errors.push(`${at}: must be one of ${schema.enum.join(', ')}`);
  switch (schema.type) {
    case 'string':
      if (typeof value !== 'string') { errors.push(`${at}: must be a string`); return; }
      if (schema.pattern && !new RegExp(schema.pattern).test(value)) errors.push(`${at}: must match ${schema.pattern}`);
      if (schema.minLength !== undefined && value.length < schema.minLength) errors.push(`${at}: too short`);
      if (schema.maxLength !== undefined && value.length > schema.maxLength) errors.push(`${at}: too long`);
      return;
    case 'integer':
      if (typeof value !== 'number' || !Number.isInteger(value)) { errors.push(`${at}: must be an integer`); return; }
      if (schema.minimum !== undefined && value < schema.minimum) errors.push(`${at}: below ${schema.minimum}`);
      if (schema.maximum !== undefined && value > schema.maximum) errors.push(`${at}: above ${schema.maximum}`);
      return;
    case 'object': {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) { errors.push(`${at}: must be an object`); return; }
      const obj = value as Record<string, unknown>;
      for (const r of schema.required ?? []) if (!(r in obj)) errors.push(`${at}.${r}: is required`);
      for (const [k, v] of Object.entries(obj)) {
        const sub = schema.properties?.[k];
        if (sub) check(v, sub, root, `${at}.${k}`, errors);
        else if (schema.additionalProperties === false) errors.push(`${at}.${k}: is not allowed`);
      }
      return;
    }
    case undefined:
      return;
    default:
      throw new Error(`deploy.json schema type ${schema.type} at ${at} is not supported by the generator`);
  }
}

/** Parses a deploy.json; throws with every problem listed when it breaks its schema. */
export function parseDeployJson(text: string): DeployDoc {
  let doc: any;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new Error(`deploy.json is not JSON: ${(e as Error).message}`);
  }
  const kind = doc?.kind;
  if (kind !== 'producer' && kind !== 'consumer') {
    throw new Error('deploy.json kind must be "producer" or "consumer"');
  }
  const schema = loadSchema(kind);
  const errors: string[] = [];
  check(doc, schema, schema, '$', errors);
  // The consistency the schema cannot express, as functions/core/src/deploy.rs checks it.
  if (errors.length === 0) {
    if (doc.source !== `busway.${doc.application}`) errors.push('$.source: must be busway.{application}');
    if (doc.detail_type !== `${doc.event_type}.${doc.version}`) errors.push('$.detail_type: must be {event_type}.{version}');
    if (kind === 'producer' && doc.stack_name !== `busway-producer-${doc.event_type.replace(/_/g, '-')}-v${doc.version}`) {
      errors.push('$.stack_name: must be busway-producer-{event-type}-v{version}');
    }
    if (kind === 'consumer') {
      if (doc.stack_name !== `busway-consumer-${doc.subscription_id}`) errors.push('$.stack_name: must be busway-consumer-{subscription_id}');
      if (doc.rule_name !== `busway-${doc.subscription_id}`) errors.push('$.rule_name: must be busway-{subscription_id}');
      if (doc.replay_from !== undefined && doc.bus_kind === 'classic') errors.push('$.replay_from: only a Custom Event Bus subscriber starts at a point in time');
      const expected = {
        source: [doc.source],
        'detail-type': [doc.detail_type],
        detail: { metadata: { event_attributes: { target: [doc.target_unit] } } },
      };
      // Key order is not meaning: the portal writes the pattern with sorted keys.
      if (!isDeepStrictEqual(doc.event_pattern, expected)) errors.push("$.event_pattern: must be the consumer rule pattern of the README's Contracts");
    }
  }
  if (errors.length > 0) throw new Error(`deploy.json is invalid:\n  ${errors.join('\n  ')}`);
  return doc as DeployDoc;
}

export function readDeployJson(file: string): DeployDoc {
  return parseDeployJson(fs.readFileSync(file, 'utf8'));
}
