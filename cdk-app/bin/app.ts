#!/usr/bin/env node
// Generator entry point: `cdk synth|deploy|destroy -c deployJson=<file> [-c platformEnv=dev]
// [-c busKind=custom|classic]` (the platform's bus, for a consumer deploy.json that names none).
// The stack it builds is named by the deploy.json (`stack_name`).
import { App } from 'aws-cdk-lib';
import { readDeployJson } from '../lib/deploy-config';
import { generate } from '../lib/generate';
import { busKind } from '../lib/platform-names';

const app = new App();
const file = app.node.tryGetContext('deployJson');
if (!file) throw new Error('context deployJson (the path of a deploy.json) is required: cdk synth -c deployJson=deploy.json');
const platformEnv = app.node.tryGetContext('platformEnv') ?? 'dev';
generate(app, readDeployJson(file), platformEnv, {
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
}, busKind(app.node.tryGetContext('busKind'), 'classic'));
app.synth();
