# Offline plan of the whole stack with a mocked AWS provider (terraform test, Terraform >= 1.7):
# catches what `validate` cannot (expressions over real variable values, counts, variable
# validations, the names other parts of the repository rely on) without credentials. Run by
# scripts/ops/check-terraform. The environment roots' own tests check their defaults.
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

# A complete set of inputs (the module has no defaults), for an environment named "qa".
variables {
  environment                 = "qa"
  azs                         = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
  vpc_cidr                    = "10.50.0.0/16"
  nat_gateway_per_az          = false
  alb_ingress_cidrs           = ["0.0.0.0/0"]
  eks_public_access_cidrs     = []
  cluster_admin_role_arns     = []
  ci_push_role_arns           = []
  kubernetes_version          = "1.33"
  eks_addon_versions          = {}
  node_instance_types         = ["m6i.large"]
  node_min_size               = 3
  node_desired_size           = 3
  node_max_size               = 4
  db_instance_class           = "db.t4g.medium"
  db_allocated_storage_gb     = 20
  db_max_allocated_storage_gb = 100
  db_backup_retention_days    = 7
  db_max_connections_alarm    = 150
  log_retention_days          = 365
  alarm_email_addresses       = []
  alb_arn_suffix              = ""
}

run "names_follow_the_environment" {
  command = plan

  assert {
    condition     = output.eks_cluster_name == "todo-qa"
    error_message = "The cluster must be named todo-<environment> (k8s overlays and docs use it)."
  }

  assert {
    condition     = output.db_instance_identifier == "todo-qa"
    error_message = "The DB instance must be named todo-<environment> (docs/recovery.md uses it)."
  }

  assert {
    condition     = output.service_secret_name == "todo-qa/todo-service"
    error_message = "The service secret must be named todo-<environment>/todo-service (k8s overlays read it)."
  }
}

run "one_shared_nat_gateway" {
  command = plan

  variables {
    nat_gateway_per_az = false
  }

  assert {
    condition     = length(output.nat_gateway_public_ips) == 1
    error_message = "nat_gateway_per_az = false must build one shared NAT gateway."
  }
}

run "one_nat_gateway_per_az" {
  command = plan

  variables {
    nat_gateway_per_az = true
  }

  assert {
    condition     = length(output.nat_gateway_public_ips) == 3
    error_message = "nat_gateway_per_az = true must build one NAT gateway per AZ."
  }
}

run "rejects_short_backup_retention" {
  command = plan

  variables {
    db_backup_retention_days = 3
  }

  expect_failures = [var.db_backup_retention_days]
}

run "rejects_long_backup_retention" {
  command = plan

  variables {
    db_backup_retention_days = 36
  }

  expect_failures = [var.db_backup_retention_days]
}

run "rejects_environment_unfit_for_names" {
  command = plan

  variables {
    environment = "Prod_1"
  }

  expect_failures = [var.environment]
}
