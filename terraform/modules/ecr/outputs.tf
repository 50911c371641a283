output "repository_url" {
  description = "Registry URL to tag and push the image to (<account>.dkr.ecr.<region>.amazonaws.com/<name>)."
  value       = aws_ecr_repository.this.repository_url
}

output "repository_arn" {
  description = "ARN of the repository (for CI push policies)."
  value       = aws_ecr_repository.this.arn
}

output "kms_key_arn" {
  description = "ARN of the KMS key encrypting the images."
  value       = aws_kms_key.this.arn
}
