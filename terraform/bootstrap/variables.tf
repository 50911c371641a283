variable "aws_region" {
  type        = string
  description = "Region of the state bucket and lock table."
  default     = "eu-west-1"
}

variable "allowed_account_ids" {
  type        = list(string)
  description = "AWS account IDs this root may be applied to."
}

variable "name_prefix" {
  type        = string
  description = "Prefix of the bucket, table and key names; the bucket name gets the account ID and region appended to be globally unique."
  default     = "todo-service"
}

variable "noncurrent_version_retention_days" {
  type        = number
  description = "Days to keep superseded state versions (the undo history of the state)."
  default     = 90
}
