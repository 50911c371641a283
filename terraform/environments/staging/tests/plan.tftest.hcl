# Offline plan with a mocked AWS provider (terraform test, Terraform >= 1.7): catches what
# `validate` cannot (expressions over real variable values, counts, variable validations)
# without credentials. Run by scripts/ops/check-terraform. This file checks what is
# particular to staging (its defaults, its names); what holds for every environment (the NAT
# toggle, the backup retention range) is tested once in modules/stack/tests.
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
    condition     = length(output.nat_gateway_public_ips) == 1
    error_message = "staging expects 1 NAT gateway(s) with the default nat_gateway_per_az."
  }

  assert {
    condition     = var.db_backup_retention_days == 7
    error_message = "staging keeps 7 days of automated backups by default (docs/recovery.md)."
  }

  assert {
    condition     = output.eks_cluster_name == "todo-staging"
    error_message = "The cluster must be named todo-staging (k8s overlays and docs use it)."
  }

  assert {
    condition     = output.db_instance_identifier == "todo-staging"
    error_message = "The DB instance must be named todo-staging (docs/recovery.md uses it)."
  }

  assert {
    condition     = output.service_secret_name == "todo-staging/todo-service"
    error_message = "The service secret must be named todo-staging/todo-service (k8s/overlays/staging reads it)."
  }
}
