# State lives in the S3 bucket and DynamoDB lock table created by terraform/bootstrap.
# Bucket, region and table come from a file that is not committed (no account IDs in git):
#   cp backend.hcl.example backend.hcl   # fill in the bootstrap outputs
#   terraform init -backend-config=backend.hcl
terraform {
  backend "s3" {
    key     = "todo-service/staging/terraform.tfstate"
    encrypt = true
  }
}
