"""Adapters that speak DynamoDB, SQS and Secrets Manager on behalf of the domain."""
