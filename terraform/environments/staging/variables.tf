variable "aws_region" {
  type        = string
  description = "AWS region of the environment."
  default     = "eu-west-1"
}

variable "allowed_account_ids" {
  type        = list(string)
  description = "AWS account IDs this root may be applied to (guards against the wrong profile)."
}

variable "repository" {
  type        = string
  description = "Source repository, recorded in the default Repository tag."
  default     = "todo-service"
}

variable "owner" {
  type        = string
  description = "Owning team, recorded in the default Owner tag."
  default     = "platform"
}

variable "azs" {
  type        = list(string)
  description = "The three availability zones to spread subnets, nodes and the database over."
  default     = ["eu-west-1a", "eu-west-1b", "eu-west-1c"]
}

variable "vpc_cidr" {
  type        = string
  description = "CIDR of the environment's VPC (must not overlap peered networks)."
  default     = "10.30.0.0/16"
}

variable "nat_gateway_per_az" {
  type        = bool
  description = "One NAT gateway per AZ (true, survives an AZ outage) or one shared NAT gateway (false, cheaper)."
  default     = false
}

variable "alb_ingress_cidrs" {
  type        = list(string)
  description = "Client CIDRs allowed to reach the ALB on 443."
  default     = ["0.0.0.0/0"]
}

variable "eks_public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the EKS API publicly; empty keeps it private (VPN/bastion only)."
  default     = []
}

variable "cluster_admin_role_arns" {
  type        = list(string)
  description = "IAM roles with cluster-admin on EKS (the operators' SSO role; CI needs none: Argo CD deploys from inside the cluster)."
  default     = []
}

variable "ci_push_role_arns" {
  type        = list(string)
  description = "IAM roles allowed to push images to ECR (the CI role)."
  default     = []
}

variable "kubernetes_version" {
  type        = string
  description = "EKS Kubernetes version."
  default     = "1.33"
}

variable "eks_addon_versions" {
  type        = map(string)
  description = "Versions of the EKS managed add-ons (eks-pod-identity-agent, aws-ebs-csi-driver, metrics-server) by name; absent ones get EKS's default for the Kubernetes version when created. Pin them before upgrading Kubernetes: aws eks describe-addon-versions --kubernetes-version <v> --addon-name <name>."
  default     = {}
}

variable "node_instance_types" {
  type        = list(string)
  description = "Instance types of the EKS managed node group (Nitro, trunk-ENI capable)."
  default     = ["m6i.large"]
}

variable "node_min_size" {
  type        = number
  description = "Minimum node count."
  default     = 3
}

variable "node_desired_size" {
  type        = number
  description = "Initial node count."
  default     = 3
}

variable "node_max_size" {
  type        = number
  description = "Maximum node count."
  default     = 4
}

variable "db_instance_class" {
  type        = string
  description = "RDS instance class."
  default     = "db.t4g.medium"
}

variable "db_allocated_storage_gb" {
  type        = number
  description = "Initial RDS storage in GiB."
  default     = 20
}

variable "db_max_allocated_storage_gb" {
  type        = number
  description = "RDS storage autoscaling ceiling in GiB."
  default     = 100
}

variable "db_backup_retention_days" {
  type        = number
  description = "Automated backup / point-in-time restore window in days (7-35, checked by modules/stack)."
  default     = 7
}

variable "db_max_connections_alarm" {
  type        = number
  description = "DatabaseConnections alarm threshold: at least the peak of docs/connection-budget.md (the service at the HPA maximum plus operators) and at most twice it (scripts/ops/check-connection-budget)."
  default     = 100
}

variable "log_retention_days" {
  type        = number
  description = "Retention in days of every CloudWatch log group."
  default     = 365
}

variable "alarm_email_addresses" {
  type        = list(string)
  description = "E-mail addresses notified by the alarm topic."
  default     = []
}

variable "alb_arn_suffix" {
  type        = string
  description = "ARN suffix (app/<name>/<id>) of the ALB the Load Balancer Controller created for the Ingress; empty skips the ALB alarms until it exists."
  default     = ""
}
