# One environment of todo-service: network, security groups, PostgreSQL, EKS with the AWS
# side of its add-ons, ECR and alarms, wired together. Each root in terraform/environments/<env> calls this module once
# with its own sizes; every resource is named todo-<env>. The Kubernetes side
# (k8s/overlays/<env>) consumes the outputs: the IRSA role, the pods security group
# (SecurityGroupPolicy), the ALB security group (Ingress annotation), the image repository
# and the secret name.

locals {
  name = "todo-${var.environment}"
}

module "observability" {
  source = "../observability"

  name                          = local.name
  log_retention_days            = var.log_retention_days
  application_log_groups        = ["/todo/${var.environment}/todo-service"]
  alarm_email_addresses         = var.alarm_email_addresses
  rds_instance_identifier       = module.rds.instance_identifier
  rds_max_connections_threshold = var.db_max_connections_alarm
  alb_arn_suffix                = var.alb_arn_suffix
}

module "vpc" {
  source = "../vpc"

  name                    = local.name
  cidr_block              = var.vpc_cidr
  azs                     = var.azs
  nat_gateway_per_az      = var.nat_gateway_per_az
  cluster_name            = local.name
  log_kms_key_arn         = module.observability.log_kms_key_arn
  flow_log_retention_days = var.log_retention_days
}

module "security_groups" {
  source = "../security-groups"

  name              = local.name
  vpc_id            = module.vpc.vpc_id
  vpc_cidr_block    = module.vpc.vpc_cidr_block
  alb_ingress_cidrs = var.alb_ingress_cidrs
  nodes_extra_tags  = { "karpenter.sh/discovery" = local.name }
}

module "rds" {
  source = "../rds"

  name                     = local.name
  subnet_ids               = module.vpc.private_subnet_ids
  security_group_ids       = [module.security_groups.rds_security_group_id]
  instance_class           = var.db_instance_class
  allocated_storage_gb     = var.db_allocated_storage_gb
  max_allocated_storage_gb = var.db_max_allocated_storage_gb
  backup_retention_days    = var.db_backup_retention_days
  multi_az                 = true
  log_kms_key_arn          = module.observability.log_kms_key_arn
  log_retention_days       = var.log_retention_days
}

module "eks" {
  source = "../eks"

  name                      = local.name
  kubernetes_version        = var.kubernetes_version
  private_subnet_ids        = module.vpc.private_subnet_ids
  cluster_security_group_id = module.security_groups.cluster_security_group_id
  node_security_group_id    = module.security_groups.nodes_security_group_id
  public_access_cidrs       = var.eks_public_access_cidrs
  cluster_admin_role_arns   = var.cluster_admin_role_arns
  log_kms_key_arn           = module.observability.log_kms_key_arn
  log_retention_days        = var.log_retention_days
  node_instance_types       = var.node_instance_types
  node_min_size             = var.node_min_size
  node_desired_size         = var.node_desired_size
  node_max_size             = var.node_max_size
  db_resource_id            = module.rds.instance_resource_id
}

# EKS managed add-ons (Pod Identity agent, EBS CSI driver, metrics-server) and the IAM of
# the add-ons Argo CD installs from k8s/cluster-addons (Load Balancer Controller, Karpenter,
# Fluent Bit into the application log group).
module "cluster_addons" {
  source = "../cluster-addons"

  cluster_name               = module.eks.node_group_cluster_name
  addon_versions             = var.eks_addon_versions
  application_log_group_arns = module.observability.application_log_group_arns
}

module "ecr" {
  source = "../ecr"

  repository_name     = "${local.name}/todo-service"
  push_principal_arns = var.ci_push_role_arns
}
