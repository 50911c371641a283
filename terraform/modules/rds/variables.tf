variable "name" {
  type        = string
  description = "Name prefix and DB instance identifier (e.g. todo-production)."
}

variable "subnet_ids" {
  type        = list(string)
  description = "Private subnets (one per AZ) for the DB subnet group."
}

variable "security_group_ids" {
  type        = list(string)
  description = "Security groups of the instance (the security-groups module's rds group)."
}

variable "engine_version" {
  type        = string
  description = "PostgreSQL version; a major version (\"16\") lets RDS pick the current minor and auto minor upgrades keep it patched."
  default     = "16"

  validation {
    condition     = can(regex("^16(\\.[0-9]+)?$", var.engine_version))
    error_message = "engine_version must be PostgreSQL 16 (\"16\" or \"16.x\"); the parameter group family is postgres16."
  }
}

variable "instance_class" {
  type        = string
  description = "RDS instance class (e.g. db.m7g.large)."
}

variable "allocated_storage_gb" {
  type        = number
  description = "Initial gp3 storage in GiB."
  default     = 50
}

variable "max_allocated_storage_gb" {
  type        = number
  description = "Upper bound for storage autoscaling in GiB."
  default     = 500
}

variable "database_name" {
  type        = string
  description = "Name of the database created with the instance."
  default     = "todo"
}

variable "master_username" {
  type        = string
  description = "Master user name; its password is generated and rotated by RDS in Secrets Manager (manage_master_user_password), never in Terraform."
  default     = "todo_admin"
}

variable "multi_az" {
  type        = bool
  description = "Synchronous standby in a second AZ with automatic failover (about 60-120 s)."
  default     = true
}

variable "backup_retention_days" {
  type        = number
  description = "Days of automated backups; point-in-time restore is possible to any second inside this window (transaction logs are shipped every 5 minutes)."
  default     = 14

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 7 and 35."
  }
}

variable "backup_window" {
  type        = string
  description = "Daily UTC window for the automated snapshot (hh24:mi-hh24:mi), not overlapping the maintenance window."
  default     = "02:00-03:00"
}

variable "maintenance_window" {
  type        = string
  description = "Weekly UTC maintenance window (ddd:hh24:mi-ddd:hh24:mi) for minor upgrades."
  default     = "sun:04:00-sun:05:00"
}

variable "monitoring_interval_seconds" {
  type        = number
  description = "Enhanced monitoring granularity in seconds (1, 5, 10, 15, 30 or 60)."
  default     = 30

  validation {
    condition     = contains([1, 5, 10, 15, 30, 60], var.monitoring_interval_seconds)
    error_message = "monitoring_interval_seconds must be one of 1, 5, 10, 15, 30, 60."
  }
}

variable "performance_insights_retention_days" {
  type        = number
  description = "Performance Insights retention in days (7 is free; otherwise a multiple of 31, up to 731)."
  default     = 7
}

variable "log_retention_days" {
  type        = number
  description = "Retention in days of the exported PostgreSQL log groups."
  default     = 365
}

variable "log_kms_key_arn" {
  type        = string
  description = "KMS key ARN that encrypts the exported PostgreSQL log groups (the observability module's logs key)."
}

variable "log_min_duration_statement_ms" {
  type        = number
  description = "Log every statement slower than this many milliseconds (-1 disables)."
  default     = 500
}

variable "ca_cert_identifier" {
  type        = string
  description = "Certificate authority of the server certificate clients verify (sslmode=verify-full)."
  default     = "rds-ca-rsa2048-g1"
}

variable "apply_immediately" {
  type        = bool
  description = "Apply modifications now instead of in the maintenance window (keep false in production)."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource (copied to snapshots)."
  default     = {}
}
