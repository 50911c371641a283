# Offline plan with a mocked AWS provider (terraform test, Terraform >= 1.7): catches what
# `validate` cannot (expressions over real variable values, counts, variable validations)
# without credentials. Run by scripts/ops/check-terraform.
mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }

  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }

  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }

  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }
}

variables {
  allowed_account_ids = ["123456789012"]
}

run "plan_with_defaults" {
  command = plan

  assert {
    condition     = aws_s3_bucket.state.bucket == "todo-service-tfstate-123456789012-eu-west-1"
    error_message = "The state bucket name must carry the account ID and region."
  }

  assert {
    condition     = aws_dynamodb_table.lock.name == "todo-service-tflock"
    error_message = "The lock table name must match backend.hcl.example."
  }
}
