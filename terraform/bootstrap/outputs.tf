output "state_bucket" {
  description = "S3 bucket for the environments' state (backend.hcl: bucket)."
  value       = aws_s3_bucket.state.id
}

output "lock_table" {
  description = "DynamoDB table for state locking (backend.hcl: dynamodb_table)."
  value       = aws_dynamodb_table.lock.name
}

output "kms_key_alias" {
  description = "KMS key alias encrypting state objects (backend.hcl: kms_key_id)."
  value       = aws_kms_alias.state.name
}

output "region" {
  description = "Region of the bucket and table (backend.hcl: region)."
  value       = var.aws_region
}
