output "log_kms_key_arn" {
  description = "ARN of the KMS key for CloudWatch log groups (pass to the vpc, rds and eks modules)."
  value       = aws_kms_key.logs.arn
}

output "alarm_topic_arn" {
  description = "ARN of the encrypted SNS topic every alarm notifies."
  value       = aws_sns_topic.alarms.arn
}

output "application_log_group_arns" {
  description = "ARNs of the application log groups created here (without the trailing :*), for the writers' IAM policies (Fluent Bit in modules/cluster-addons)."
  value       = [for g in aws_cloudwatch_log_group.application : g.arn]
}

output "application_log_group_names" {
  description = "Names of the application log groups created here."
  value       = [for g in aws_cloudwatch_log_group.application : g.name]
}

output "alarm_names" {
  description = "Names of the CloudWatch alarms created here."
  value = concat(
    [
      aws_cloudwatch_metric_alarm.rds_cpu.alarm_name,
      aws_cloudwatch_metric_alarm.rds_free_storage.alarm_name,
      aws_cloudwatch_metric_alarm.rds_connections.alarm_name,
      aws_cloudwatch_metric_alarm.rds_read_latency.alarm_name,
    ],
    [for a in aws_cloudwatch_metric_alarm.rds_replica_lag : a.alarm_name],
    aws_cloudwatch_metric_alarm.alb_5xx[*].alarm_name,
    aws_cloudwatch_metric_alarm.alb_target_response_time[*].alarm_name,
  )
}
