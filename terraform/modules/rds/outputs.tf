output "instance_identifier" {
  description = "DB instance identifier (CloudWatch dimension DBInstanceIdentifier; source of point-in-time restores)."
  value       = aws_db_instance.this.identifier
}

output "instance_arn" {
  description = "ARN of the DB instance."
  value       = aws_db_instance.this.arn
}

output "instance_resource_id" {
  description = "DbiResourceId, used in rds-db:connect IAM policies for IAM database authentication."
  value       = aws_db_instance.this.resource_id
}

output "endpoint" {
  description = "host:port of the writer endpoint (follows Multi-AZ failover)."
  value       = aws_db_instance.this.endpoint
}

output "address" {
  description = "Hostname of the writer endpoint."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Name of the application database."
  value       = aws_db_instance.this.db_name
}

output "master_user_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the master credentials (managed and rotated by RDS). For operators and migrations of roles only; the service uses its own secret."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "kms_key_arn" {
  description = "ARN of the customer KMS key encrypting storage, snapshots, Performance Insights and the master secret (needed to copy snapshots across accounts/regions)."
  value       = aws_kms_key.this.arn
}

output "parameter_group_name" {
  description = "Name of the DB parameter group; reuse it when restoring (docs/recovery.md)."
  value       = aws_db_parameter_group.this.name
}

output "subnet_group_name" {
  description = "Name of the DB subnet group; reuse it when restoring (docs/recovery.md)."
  value       = aws_db_subnet_group.this.name
}
