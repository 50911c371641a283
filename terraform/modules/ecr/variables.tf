variable "repository_name" {
  type        = string
  description = "Name of the ECR repository (e.g. todo-production/todo-service)."
}

variable "keep_tagged_images" {
  type        = number
  description = "How many release images (tags starting with v or sha-) to keep; older ones expire. Keep enough to roll back."
  default     = 50
}

variable "untagged_expiry_days" {
  type        = number
  description = "Days after which untagged images (superseded build layers) expire."
  default     = 7
}

variable "push_principal_arns" {
  type        = list(string)
  description = "IAM role ARNs allowed to push images (the CI role). Pull access comes from the node role's ECR read-only policy."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource."
  default     = {}
}
