variable "name" {
  type        = string
  description = "Name prefix (e.g. todo-production)."
}

variable "log_retention_days" {
  type        = number
  description = "Retention in days of every log group this module creates (CloudWatch accepted values, e.g. 365)."
  default     = 365
}

variable "application_log_groups" {
  type        = list(string)
  description = "Names of the application log groups to create (container logs shipped by Fluent Bit / CloudWatch agent)."
  default     = []
}

variable "alarm_email_addresses" {
  type        = list(string)
  description = "E-mail addresses subscribed to the alarm topic (each must confirm the subscription). Not secret."
  default     = []
}

variable "rds_instance_identifier" {
  type        = string
  description = "Identifier of the RDS instance the database alarms watch."
}

variable "rds_read_replica_identifiers" {
  type        = list(string)
  description = "Identifiers of RDS read replicas to alarm on ReplicaLag (empty: none; a Multi-AZ standby is synchronous and has no lag metric)."
  default     = []
}

variable "rds_cpu_threshold_percent" {
  type        = number
  description = "Alarm when RDS CPUUtilization stays above this percentage for 15 minutes."
  default     = 80
}

variable "rds_free_storage_threshold_bytes" {
  type        = number
  description = "Alarm when RDS FreeStorageSpace falls below this many bytes."
  default     = 10737418240
}

variable "rds_max_connections_threshold" {
  type        = number
  description = "Alarm when RDS DatabaseConnections stays above this count (docs/connection-budget.md: at least the peak budget of the environment, at most twice it)."
  default     = 300
}

variable "rds_read_latency_threshold_seconds" {
  type        = number
  description = "Alarm when RDS ReadLatency stays above this many seconds."
  default     = 0.02
}

variable "rds_replica_lag_threshold_seconds" {
  type        = number
  description = "Alarm when a read replica's ReplicaLag stays above this many seconds."
  default     = 60
}

variable "alb_arn_suffix" {
  type        = string
  description = "ARN suffix (app/<name>/<id>) of the ALB created by the AWS Load Balancer Controller; empty until the Ingress exists, which skips the ALB alarms."
  default     = ""
}

variable "alb_5xx_threshold" {
  type        = number
  description = "Alarm when the ALB and its targets return more than this many 5xx responses per minute for 5 minutes."
  default     = 10
}

variable "alb_target_response_time_threshold_seconds" {
  type        = number
  description = "Alarm when the p99 ALB TargetResponseTime stays above this many seconds for 5 minutes."
  default     = 1
}

variable "tags" {
  type        = map(string)
  description = "Extra tags for every resource."
  default     = {}
}
