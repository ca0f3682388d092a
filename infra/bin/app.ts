#!/usr/bin/env node
// Platform entry point: `cdk synth|deploy [-c platformEnv=dev] [-c lambdaAssets=../target/lambda]`.
// Environment-agnostic stacks: the account and region are the deploying credentials' (deploy.sh).
import { App } from 'aws-cdk-lib';
import { platform } from '../lib/platform';

const app = new App();
platform(app, app.node.tryGetContext('platformEnv') ?? 'dev', app.node.tryGetContext('lambdaAssets') ?? '../target/lambda');
app.synth();
