#!/usr/bin/env node
// Platform entry point: `cdk synth|deploy [-c platformEnv=dev] [-c lambdaAssets=../target/lambda]
// [-c busKind=custom|classic] [-c busRetentionDays=7]` (README: "Bus kinds").
// Environment-agnostic stacks: the account and region are the deploying credentials' (deploy.sh).
import { App } from 'aws-cdk-lib';
import { DEFAULT_RETENTION_DAYS } from '../lib/bus';
import { busKind, DEFAULT_BUS_KIND } from '../lib/names';
import { platform } from '../lib/platform';

const app = new App();
platform(app, app.node.tryGetContext('platformEnv') ?? 'dev', app.node.tryGetContext('lambdaAssets') ?? '../target/lambda', {
  kind: busKind(app.node.tryGetContext('busKind'), DEFAULT_BUS_KIND),
  retentionDays: Number(app.node.tryGetContext('busRetentionDays') ?? DEFAULT_RETENTION_DAYS),
});
app.synth();
