variable "cluster_name" {
  type        = string
  description = "Name of the EKS cluster. Pass modules/eks' node_group_cluster_name: the add-ons run pods, so they wait for the managed nodes."
}

variable "addon_versions" {
  type        = map(string)
  description = "Versions of the EKS managed add-ons by add-on name (eks-pod-identity-agent, aws-ebs-csi-driver, metrics-server); an absent one gets EKS's default for the cluster's Kubernetes version when it is created."
  default     = {}
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource."
  default     = {}
}

variable "application_log_group_arns" {
  type        = list(string)
  description = "ARNs (without the trailing :*) of the CloudWatch log groups Fluent Bit writes the service's logs into (modules/observability's application_log_group_arns)."

  validation {
    condition     = length(var.application_log_group_arns) > 0
    error_message = "Fluent Bit needs at least one application log group to write into."
  }
}
