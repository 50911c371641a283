variable "name" {
  type        = string
  description = "Name prefix for every resource (e.g. todo-production)."
}

variable "cidr_block" {
  type        = string
  description = "IPv4 CIDR of the VPC; split into /20 public and /19 private subnets, one of each per AZ."

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) <= 16
    error_message = "cidr_block must be a valid IPv4 CIDR no smaller than /16."
  }
}

variable "azs" {
  type        = list(string)
  description = "Exactly three availability zones (e.g. [\"eu-west-1a\", \"eu-west-1b\", \"eu-west-1c\"])."

  validation {
    condition     = length(var.azs) == 3
    error_message = "azs must list exactly three availability zones."
  }
}

variable "nat_gateway_per_az" {
  type        = bool
  description = "true: one NAT gateway per AZ (production, survives an AZ loss); false: a single NAT gateway shared by all private subnets (cheaper, for staging)."
  default     = true
}

variable "cluster_name" {
  type        = string
  description = "EKS cluster name, used for the kubernetes.io/cluster/<name> subnet tags the AWS Load Balancer Controller discovers subnets by."
}

variable "flow_log_retention_days" {
  type        = number
  description = "Retention of the VPC flow log group in days."
  default     = 365
}

variable "log_kms_key_arn" {
  type        = string
  description = "ARN of the KMS key that encrypts the flow log group (the observability module's logs key)."
}

variable "flow_log_traffic_type" {
  type        = string
  description = "Which traffic the flow logs record: ACCEPT, REJECT or ALL."
  default     = "ALL"

  validation {
    condition     = contains(["ACCEPT", "REJECT", "ALL"], var.flow_log_traffic_type)
    error_message = "flow_log_traffic_type must be ACCEPT, REJECT or ALL."
  }
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource (the provider adds the default tags)."
  default     = {}
}
