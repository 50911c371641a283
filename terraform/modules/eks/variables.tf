variable "name" {
  type        = string
  description = "Cluster name and name prefix (e.g. todo-production)."
}

variable "kubernetes_version" {
  type        = string
  description = "Kubernetes minor version of the control plane and node group (e.g. 1.33); upgrade one minor at a time."
  default     = "1.33"
}

variable "private_subnet_ids" {
  type        = list(string)
  description = "Private subnets (one per AZ) for the control plane ENIs and the node group."
}

variable "cluster_security_group_id" {
  type        = string
  description = "Additional security group of the control plane (security-groups module)."
}

variable "node_security_group_id" {
  type        = string
  description = "Security group of the nodes (security-groups module)."
}

variable "public_access_cidrs" {
  type        = list(string)
  description = "CIDRs allowed to reach the public API endpoint; empty keeps the endpoint private only (reach it through a VPN or bastion). Never 0.0.0.0/0."
  default     = []

  validation {
    condition     = !contains(var.public_access_cidrs, "0.0.0.0/0")
    error_message = "public_access_cidrs must not contain 0.0.0.0/0; list the operators' egress CIDRs."
  }
}

variable "cluster_admin_role_arns" {
  type        = list(string)
  description = "IAM role ARNs given cluster-admin through EKS access entries (e.g. the operators' SSO role; CI deploys through Argo CD and needs none)."
  default     = []
}

variable "log_kms_key_arn" {
  type        = string
  description = "KMS key ARN encrypting the control plane log group (observability module's logs key)."
}

variable "log_retention_days" {
  type        = number
  description = "Retention in days of the control plane log group."
  default     = 365
}

variable "node_instance_types" {
  type        = list(string)
  description = "Instance types of the managed node group; Nitro types that support trunk ENIs (security groups for pods), e.g. m6i.large."
  default     = ["m6i.large"]
}

variable "node_min_size" {
  type        = number
  description = "Minimum number of nodes (at least one per AZ for a zone-spread service)."
  default     = 3
}

variable "node_desired_size" {
  type        = number
  description = "Initial number of nodes; later changes by the cluster autoscaler are ignored by Terraform."
  default     = 3
}

variable "node_max_size" {
  type        = number
  description = "Maximum number of nodes."
  default     = 6
}

variable "node_disk_size_gb" {
  type        = number
  description = "Size of each node's encrypted gp3 root volume in GiB."
  default     = 50
}

variable "service_namespace" {
  type        = string
  description = "Kubernetes namespace of the todo-service ServiceAccount trusted by the IRSA role."
  default     = "todo"
}

variable "service_account_name" {
  type        = string
  description = "Name of the todo-service Kubernetes ServiceAccount trusted by the IRSA role."
  default     = "todo-service"
}

variable "db_resource_id" {
  type        = string
  description = "DbiResourceId of the RDS instance, for the rds-db:connect permission (IAM database authentication)."
}

variable "db_iam_username" {
  type        = string
  description = "PostgreSQL role the service may log in as with an IAM token (granted rds_iam in the database)."
  default     = "todo_service"
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource."
  default     = {}
}
