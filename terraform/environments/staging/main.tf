# staging environment of todo-service: everything is built by modules/stack, with this
# environment's values (variables.tf). moved.tf keeps the state addresses of an existing
# state; providers.tf, backend.tf and versions.tf are this root's own.

locals {
  environment = "staging"
}

module "stack" {
  source = "../../modules/stack"

  environment                 = local.environment
  azs                         = var.azs
  vpc_cidr                    = var.vpc_cidr
  nat_gateway_per_az          = var.nat_gateway_per_az
  alb_ingress_cidrs           = var.alb_ingress_cidrs
  eks_public_access_cidrs     = var.eks_public_access_cidrs
  cluster_admin_role_arns     = var.cluster_admin_role_arns
  ci_push_role_arns           = var.ci_push_role_arns
  kubernetes_version          = var.kubernetes_version
  eks_addon_versions          = var.eks_addon_versions
  node_instance_types         = var.node_instance_types
  node_min_size               = var.node_min_size
  node_desired_size           = var.node_desired_size
  node_max_size               = var.node_max_size
  db_instance_class           = var.db_instance_class
  db_allocated_storage_gb     = var.db_allocated_storage_gb
  db_max_allocated_storage_gb = var.db_max_allocated_storage_gb
  db_backup_retention_days    = var.db_backup_retention_days
  db_max_connections_alarm    = var.db_max_connections_alarm
  log_retention_days          = var.log_retention_days
  alarm_email_addresses       = var.alarm_email_addresses
  alb_arn_suffix              = var.alb_arn_suffix
}
