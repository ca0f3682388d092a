import { Stack, Validations } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import { Construct, IConstruct } from 'constructs';
import { BucketBase, Names, TABLE_INDEXES } from './names';

/**
 * Objects of a platform bucket by key pattern: the IAM resource, and the same resource as cdk-nag
 * names it in an AwsSolutions-IAM5 finding. Built from the bucket's deterministic name so that the
 * acknowledgement names exactly this wildcard (a cross-stack reference renders as a hashed export).
 */
export function objects(scope: Construct, names: Names, bucket: BucketBase, keys: string): { arn: string; finding: string } {
  const stack = Stack.of(scope);
  return {
    arn: `arn:${stack.partition}:s3:::${names.bucket(bucket, stack.account)}/${keys}`,
    finding: `Resource::arn:<AWS::Partition>:s3:::${names.bucket(bucket, '<AWS::AccountId>')}/${keys}`,
  };
}

/** Acknowledges exactly these AwsSolutions-IAM5 findings (`Action::…` / `Resource::…`) on `scope`. */
export function acknowledgeWildcards(scope: IConstruct, findings: string[], reason: string): void {
  for (const f of findings) Validations.of(scope).acknowledge({ id: `AwsSolutions-IAM5[${f}]`, reason });
}

/** The table and each of its indexes by name: item actions on them, and no other table's. */
export function tableAndIndexes(table: dynamodb.ITable): string[] {
  return [table.tableArn, ...TABLE_INDEXES.map((i) => `${table.tableArn}/index/${i}`)];
}
