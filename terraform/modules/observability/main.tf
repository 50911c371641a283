# Where operators hear about trouble: encrypted log groups with a retention, an encrypted
# SNS topic, and CloudWatch alarms on the database (CPU, storage, connections, read
# latency, replica lag) and on the load balancer (5xx, p99 target response time). The
# in-cluster Prometheus alerts (monitoring/) cover the service's own metrics; these
# cover what only AWS sees.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  alarm_arns = [aws_sns_topic.alarms.arn]
}

# --- KMS: one key for CloudWatch Logs, one for the alarm topic ------------------------

data "aws_iam_policy_document" "logs_key" {
  #checkov:skip=CKV_AWS_109:KMS key policy, not an IAM policy: Resource "*" means this key only; the account-root statement is the AWS default key policy that delegates access to IAM.
  #checkov:skip=CKV_AWS_111:KMS key policy, not an IAM policy: Resource "*" means this key only; write actions are limited to the account root and the named services.
  #checkov:skip=CKV_AWS_356:KMS key policy, not an IAM policy: in a key policy Resource must be "*" (it means this key).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsUse"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "logs" {
  description             = "${var.name}: CloudWatch Logs encryption"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.logs_key.json

  tags = var.tags
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.name}-logs"
  target_key_id = aws_kms_key.logs.key_id
}

data "aws_iam_policy_document" "sns_key" {
  #checkov:skip=CKV_AWS_109:KMS key policy, not an IAM policy: Resource "*" means this key only; the account-root statement is the AWS default key policy that delegates access to IAM.
  #checkov:skip=CKV_AWS_111:KMS key policy, not an IAM policy: Resource "*" means this key only; write actions are limited to the account root and the named services.
  #checkov:skip=CKV_AWS_356:KMS key policy, not an IAM policy: in a key policy Resource must be "*" (it means this key).
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # CloudWatch alarms publish to the encrypted topic.
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey*"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "sns" {
  description             = "${var.name}: alarm topic encryption"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.sns_key.json

  tags = var.tags
}

resource "aws_kms_alias" "sns" {
  name          = "alias/${var.name}-alarms"
  target_key_id = aws_kms_key.sns.key_id
}

# --- Log groups -------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "application" {
  for_each = toset(var.application_log_groups)

  name              = each.value
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn

  tags = var.tags
}

# --- Alarm topic --------------------------------------------------------------------------

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.sns.arn

  tags = var.tags
}

data "aws_iam_policy_document" "alarms_topic" {
  statement {
    sid       = "CloudWatchAlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alarms.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sns_topic_policy" "alarms" {
  arn    = aws_sns_topic.alarms.arn
  policy = data.aws_iam_policy_document.alarms_topic.json
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_email_addresses)

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = each.value
}

# --- RDS alarms ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "rds_cpu" {
  alarm_name          = "${var.name}-rds-cpu-high"
  alarm_description   = "RDS ${var.rds_instance_identifier} CPU above ${var.rds_cpu_threshold_percent}% for 15 minutes. Runbook: monitoring/runbook.md (database)."
  namespace           = "AWS/RDS"
  metric_name         = "CPUUtilization"
  dimensions          = { DBInstanceIdentifier = var.rds_instance_identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  threshold           = var.rds_cpu_threshold_percent
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_arns
  ok_actions          = local.alarm_arns

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_free_storage" {
  alarm_name          = "${var.name}-rds-free-storage-low"
  alarm_description   = "RDS ${var.rds_instance_identifier} free storage below ${var.rds_free_storage_threshold_bytes} bytes; storage autoscaling may be at its maximum. Runbook: monitoring/runbook.md (database)."
  namespace           = "AWS/RDS"
  metric_name         = "FreeStorageSpace"
  dimensions          = { DBInstanceIdentifier = var.rds_instance_identifier }
  statistic           = "Minimum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.rds_free_storage_threshold_bytes
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_arns
  ok_actions          = local.alarm_arns

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_connections" {
  alarm_name          = "${var.name}-rds-connections-high"
  alarm_description   = "RDS ${var.rds_instance_identifier} has more than ${var.rds_max_connections_threshold} connections for 10 minutes (pods x DB_POOL_SIZE). Runbook: monitoring/runbook.md (database)."
  namespace           = "AWS/RDS"
  metric_name         = "DatabaseConnections"
  dimensions          = { DBInstanceIdentifier = var.rds_instance_identifier }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.rds_max_connections_threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_arns
  ok_actions          = local.alarm_arns

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_read_latency" {
  alarm_name          = "${var.name}-rds-read-latency-high"
  alarm_description   = "RDS ${var.rds_instance_identifier} read latency above ${var.rds_read_latency_threshold_seconds}s for 15 minutes. Runbook: monitoring/runbook.md (database)."
  namespace           = "AWS/RDS"
  metric_name         = "ReadLatency"
  dimensions          = { DBInstanceIdentifier = var.rds_instance_identifier }
  statistic           = "Average"
  period              = 300
  evaluation_periods  = 3
  threshold           = var.rds_read_latency_threshold_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_arns
  ok_actions          = local.alarm_arns

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "rds_replica_lag" {
  for_each = toset(var.rds_read_replica_identifiers)

  alarm_name          = "${var.name}-rds-replica-lag-${each.value}"
  alarm_description   = "Read replica ${each.value} lags more than ${var.rds_replica_lag_threshold_seconds}s behind for 10 minutes. Runbook: monitoring/runbook.md (database)."
  namespace           = "AWS/RDS"
  metric_name         = "ReplicaLag"
  dimensions          = { DBInstanceIdentifier = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 2
  threshold           = var.rds_replica_lag_threshold_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = local.alarm_arns
  ok_actions          = local.alarm_arns

  tags = var.tags
}

# --- ALB alarms (once the AWS Load Balancer Controller has created the ALB) --------------

resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  count = var.alb_arn_suffix == "" ? 0 : 1

  alarm_name          = "${var.name}-alb-5xx"
  alarm_description   = "More than ${var.alb_5xx_threshold} 5xx responses per minute (ALB-generated plus target) for 5 minutes. Runbook: monitoring/runbook.md (errors)."
  comparison_operator = "GreaterThanThreshold"
  evaluation_periods  = 5
  threshold           = var.alb_5xx_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_arns
  ok_actions          = local.alarm_arns

  metric_query {
    id          = "total_5xx"
    expression  = "FILL(elb_5xx, 0) + FILL(target_5xx, 0)"
    label       = "5xx responses per minute"
    return_data = true
  }

  metric_query {
    id = "elb_5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_ELB_5XX_Count"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }

  metric_query {
    id = "target_5xx"

    metric {
      namespace   = "AWS/ApplicationELB"
      metric_name = "HTTPCode_Target_5XX_Count"
      dimensions  = { LoadBalancer = var.alb_arn_suffix }
      period      = 60
      stat        = "Sum"
    }
  }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "alb_target_response_time" {
  count = var.alb_arn_suffix == "" ? 0 : 1

  alarm_name          = "${var.name}-alb-target-response-time-p99"
  alarm_description   = "p99 target response time above ${var.alb_target_response_time_threshold_seconds}s for 5 minutes. Runbook: monitoring/runbook.md (latency)."
  namespace           = "AWS/ApplicationELB"
  metric_name         = "TargetResponseTime"
  dimensions          = { LoadBalancer = var.alb_arn_suffix }
  extended_statistic  = "p99"
  period              = 60
  evaluation_periods  = 5
  threshold           = var.alb_target_response_time_threshold_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.alarm_arns
  ok_actions          = local.alarm_arns

  tags = var.tags
}
