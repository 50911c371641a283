# Every value comes from the environment root (terraform/environments/<env>/variables.tf),
# which holds the environment's defaults; this module has none of its own.

variable "environment" {
  type        = string
  description = "Environment name (staging, production): resources are named todo-<environment>, the service secret and the ECR repository todo-<environment>/todo-service."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]*$", var.environment))
    error_message = "environment must be lowercase letters, digits and dashes (it becomes part of resource names)."
  }
}

variable "azs" {
  type        = list(string)
  description = "The three availability zones to spread subnets, nodes and the database over."
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR of the environment's VPC (must not overlap peered networks)."
}

variable "nat_gateway_per_az" {
  type        = bool
  description = "One NAT gateway per AZ (true, survives an AZ outage) or one shared NAT gateway (false, cheaper)."
}

variable "alb_ingress_cidrs" {
  type        = list(string)
  description = "Client CIDRs allowed to reach the ALB on 443."
}

variable "eks_public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the EKS API publicly; empty keeps it private (VPN/bastion only)."
}

variable "cluster_admin_role_arns" {
  type        = list(string)
  description = "IAM roles with cluster-admin on EKS (the operators' SSO role; CI needs none: Argo CD deploys from inside the cluster)."
}

variable "ci_push_role_arns" {
  type        = list(string)
  description = "IAM roles allowed to push images to ECR (the CI role)."
}

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version."
}

variable "eks_addon_versions" {
  type        = map(string)
  description = "Versions of the EKS managed add-ons of modules/cluster-addons by name; absent ones get EKS's default for the Kubernetes version when created."
}

variable "node_instance_types" {
  type        = list(string)
  description = "Instance types of the EKS managed node group (Nitro, trunk-ENI capable)."
}

variable "node_min_size" {
  type        = number
  description = "Minimum node count."
}

variable "node_desired_size" {
  type        = number
  description = "Initial node count."
}

variable "node_max_size" {
  type        = number
  description = "Maximum node count."
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class."
}

variable "db_allocated_storage_gb" {
  type        = number
  description = "Initial RDS storage in GiB."
}

variable "db_max_allocated_storage_gb" {
  type        = number
  description = "RDS storage autoscaling ceiling in GiB."
}

variable "db_backup_retention_days" {
  type        = number
  description = "Automated backup / point-in-time restore window in days (7-35)."

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "db_backup_retention_days must be 7-35: point-in-time restore needs at least a week of backups (docs/recovery.md)."
  }
}

variable "db_max_connections_alarm" {
  type        = number
  description = "DatabaseConnections alarm threshold: at least the peak of docs/connection-budget.md and at most twice it."
}

variable "log_retention_days" {
  type        = number
  description = "Retention in days of every CloudWatch log group."
}

variable "alarm_email_addresses" {
  type        = list(string)
  description = "E-mail addresses notified by the alarm topic."
}

variable "alb_arn_suffix" {
  type        = string
  description = "ARN suffix (app/<name>/<id>) of the ALB the Load Balancer Controller created for the Ingress; empty skips the ALB alarms until it exists."
}
