# What the cluster add-ons need from AWS, for one EKS cluster:
#   - EKS managed add-ons: the Pod Identity agent, the EBS CSI driver (gp3 volumes for
#     NATS and Prometheus; the default StorageClass is k8s/cluster-addons/base/storageclass.yaml)
#     and metrics-server (resource metrics for the HPA's CPU target);
#   - the IAM of the add-ons that call AWS, through EKS Pod Identity (role trusted by
#     pods.eks.amazonaws.com for one namespace/ServiceAccount of this cluster, plus an
#     association): the EBS CSI driver, the AWS Load Balancer Controller, Karpenter,
#     Fluent Bit (writes the service's log lines into the application log groups of
#     modules/observability, nothing else) and the OpenTelemetry collector (sends the
#     service's spans to X-Ray, nothing else);
#   - Karpenter's node role (with its EKS access entry) and its interruption queue, fed by
#     EventBridge with spot interruptions, rebalance recommendations, scheduled
#     maintenance and instance state changes.
# The Helm-installed add-ons themselves (AWS Load Balancer Controller, External Secrets,
# Karpenter, kube-prometheus-stack, prometheus-adapter, Fluent Bit, the OpenTelemetry
# collector, Argo CD) are Argo CD Applications
# in k8s/cluster-addons: no Helm or Kubernetes provider here, so this module, like every
# root that uses it, validates offline with the AWS provider alone.
# The VPC CNI (with network policy enforcement), CoreDNS and kube-proxy stay in modules/eks.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  # Every add-on that calls AWS: its namespace and ServiceAccount (the Helm values in
  # k8s/cluster-addons name the same ServiceAccounts).
  pod_identities = {
    ebs_csi = {
      namespace       = "kube-system"
      service_account = "ebs-csi-controller-sa"
    }
    lb_controller = {
      namespace       = "kube-system"
      service_account = "aws-load-balancer-controller"
    }
    karpenter = {
      namespace       = "kube-system"
      service_account = "karpenter"
    }
    fluent_bit = {
      namespace       = "logging"
      service_account = "fluent-bit"
    }
    otel_collector = {
      namespace       = "monitoring"
      service_account = "otel-collector"
    }
  }

  interruption_queue_name = "${var.cluster_name}-karpenter"

  # The policy names of the template below, listed here because for_each needs its keys
  # at plan time and the rendered template holds ARNs known only after apply.
  karpenter_policy_names = toset([
    "NodeLifecyclePolicy", "IAMIntegrationPolicy", "EKSIntegrationPolicy", "InterruptionPolicy",
    "ZonalShiftPolicy", "ResourceDiscoveryPolicy",
  ])

  # Karpenter's controller policies, as its getting-started CloudFormation template of
  # the same version defines them (policies/karpenter-controller.json.tftpl).
  karpenter_policies = jsondecode(templatefile("${path.module}/policies/karpenter-controller.json.tftpl", {
    partition     = local.partition
    region        = local.region
    account_id    = local.account_id
    cluster_name  = var.cluster_name
    node_role_arn = aws_iam_role.karpenter_node.arn
    queue_arn     = aws_sqs_queue.karpenter_interruption.arn
  }))

  interruption_events = {
    scheduled_change = { source = "aws.health", detail_type = "AWS Health Event" }
    spot_interruption = {
      source      = "aws.ec2"
      detail_type = "EC2 Spot Instance Interruption Warning"
    }
    rebalance = {
      source      = "aws.ec2"
      detail_type = "EC2 Instance Rebalance Recommendation"
    }
    instance_state_change = {
      source      = "aws.ec2"
      detail_type = "EC2 Instance State-change Notification"
    }
    capacity_reservation_interruption = {
      source      = "aws.ec2"
      detail_type = "EC2 Capacity Reservation Instance Interruption Warning"
    }
  }
}

# --- EKS Pod Identity -----------------------------------------------------------------------

resource "aws_eks_addon" "pod_identity_agent" {
  cluster_name                = var.cluster_name
  addon_name                  = "eks-pod-identity-agent"
  addon_version               = lookup(var.addon_versions, "eks-pod-identity-agent", null)
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"

  tags = var.tags
}

# One role per add-on, assumable only by EKS Pod Identity for that namespace and
# ServiceAccount of this cluster (session tags that Pod Identity sets).
data "aws_iam_policy_document" "pod_identity_assume" {
  for_each = local.pod_identities

  statement {
    sid     = "EksPodIdentityAssume"
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "Service"
      identifiers = ["pods.eks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/eks-cluster-name"
      values   = [var.cluster_name]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-namespace"
      values   = [each.value.namespace]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/kubernetes-service-account"
      values   = [each.value.service_account]
    }
  }
}

resource "aws_iam_role" "pod_identity" {
  for_each = local.pod_identities

  name               = "${var.cluster_name}-${replace(each.key, "_", "-")}"
  assume_role_policy = data.aws_iam_policy_document.pod_identity_assume[each.key].json

  tags = var.tags
}

# The EBS CSI driver's association is made by its add-on (pod_identity_association below).
resource "aws_eks_pod_identity_association" "this" {
  for_each = { for k, v in local.pod_identities : k => v if k != "ebs_csi" }

  cluster_name    = var.cluster_name
  namespace       = each.value.namespace
  service_account = each.value.service_account
  role_arn        = aws_iam_role.pod_identity[each.key].arn

  tags = var.tags

  depends_on = [aws_eks_addon.pod_identity_agent]
}

# --- EBS CSI driver ----------------------------------------------------------------------------

resource "aws_iam_role_policy_attachment" "ebs_csi" {
  role       = aws_iam_role.pod_identity["ebs_csi"].name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
}

resource "aws_eks_addon" "ebs_csi" {
  cluster_name                = var.cluster_name
  addon_name                  = "aws-ebs-csi-driver"
  addon_version               = lookup(var.addon_versions, "aws-ebs-csi-driver", null)
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"

  pod_identity_association {
    role_arn        = aws_iam_role.pod_identity["ebs_csi"].arn
    service_account = local.pod_identities.ebs_csi.service_account
  }

  tags = var.tags

  depends_on = [aws_eks_addon.pod_identity_agent, aws_iam_role_policy_attachment.ebs_csi]
}

# --- metrics-server ---------------------------------------------------------------------------

# Resource metrics (metrics.k8s.io) for the HPA's CPU target and `kubectl top`. The EKS
# add-on listens on 10251 (modules/security-groups opens it from the control plane).
resource "aws_eks_addon" "metrics_server" {
  cluster_name                = var.cluster_name
  addon_name                  = "metrics-server"
  addon_version               = lookup(var.addon_versions, "metrics-server", null)
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "PRESERVE"

  tags = var.tags
}

# --- AWS Load Balancer Controller ----------------------------------------------------------------

# The controller's published policy for its version (docs/install/iam_policy.json of
# kubernetes-sigs/aws-load-balancer-controller v3.5.0), unchanged: update it together with
# the chart version in k8s/cluster-addons/base/aws-load-balancer-controller.yaml.
resource "aws_iam_policy" "lb_controller" {
  name        = "${var.cluster_name}-aws-load-balancer-controller"
  description = "AWS Load Balancer Controller of ${var.cluster_name} (upstream iam_policy.json v3.5.0)"
  policy      = file("${path.module}/policies/aws-load-balancer-controller.json")

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "lb_controller" {
  role       = aws_iam_role.pod_identity["lb_controller"].name
  policy_arn = aws_iam_policy.lb_controller.arn
}

# --- Fluent Bit ---------------------------------------------------------------------------------

# Fluent Bit's cloudwatch_logs output (k8s/cluster-addons/base/fluent-bit.yaml) writes into
# the existing, encrypted log groups only: it may create streams and put events there, but
# not create groups (auto_create_group off) or change their retention. The log groups'
# KMS key lets the CloudWatch Logs service encrypt; the writer needs no KMS permission.
data "aws_iam_policy_document" "fluent_bit" {
  statement {
    sid       = "WriteApplicationLogGroups"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = flatten([for arn in var.application_log_group_arns : [arn, "${arn}:log-stream:*"]])
  }
}

resource "aws_iam_policy" "fluent_bit" {
  name        = "${var.cluster_name}-fluent-bit"
  description = "Fluent Bit of ${var.cluster_name}: write the application log groups"
  policy      = data.aws_iam_policy_document.fluent_bit.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "fluent_bit" {
  role       = aws_iam_role.pod_identity["fluent_bit"].name
  policy_arn = aws_iam_policy.fluent_bit.arn
}

# --- OpenTelemetry collector --------------------------------------------------------------------

# The collector's awsxray exporter (k8s/cluster-addons/base/otel-collector.yaml) puts the
# service's spans as trace segments, reports its own telemetry records, and may read the
# sampling rules and targets (X-Ray's remote sampling; the service samples by itself today).
# Nothing else: no reading of traces, no changes to groups, rules or encryption. These four
# actions support no resource-level permissions, so Resource must be "*" (checkov knows and
# does not flag it; the actions are what limits the role).
data "aws_iam_policy_document" "otel_collector" {
  statement {
    sid = "SendTracesToXRay"
    actions = [
      "xray:PutTraceSegments",
      "xray:PutTelemetryRecords",
      "xray:GetSamplingRules",
      "xray:GetSamplingTargets",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_policy" "otel_collector" {
  name        = "${var.cluster_name}-otel-collector"
  description = "OpenTelemetry collector of ${var.cluster_name}: send trace segments to X-Ray"
  policy      = data.aws_iam_policy_document.otel_collector.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "otel_collector" {
  role       = aws_iam_role.pod_identity["otel_collector"].name
  policy_arn = aws_iam_policy.otel_collector.arn
}

# --- Karpenter ----------------------------------------------------------------------------------

resource "aws_iam_policy" "karpenter" {
  for_each = local.karpenter_policy_names

  name        = "${var.cluster_name}-karpenter-${each.key}"
  description = "Karpenter controller of ${var.cluster_name}: ${each.key} (upstream v1.14)"
  policy      = jsonencode(local.karpenter_policies[each.key])

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "karpenter" {
  for_each = local.karpenter_policy_names

  role       = aws_iam_role.pod_identity["karpenter"].name
  policy_arn = aws_iam_policy.karpenter[each.key].arn
}

data "aws_iam_policy_document" "node_assume" {
  statement {
    sid     = "Ec2Assume"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

# Role of the nodes Karpenter launches (k8s/cluster-addons EC2NodeClass `role`); Karpenter
# makes their instance profile. The VPC CNI uses its own IRSA role (modules/eks), so the
# nodes need no CNI permissions.
resource "aws_iam_role" "karpenter_node" {
  name               = "${var.cluster_name}-karpenter-node"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json

  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "karpenter_node" {
  for_each = toset(["AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly"])

  role       = aws_iam_role.karpenter_node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

# Lets the nodes join the cluster (authentication_mode = API in modules/eks).
resource "aws_eks_access_entry" "karpenter_node" {
  cluster_name  = var.cluster_name
  principal_arn = aws_iam_role.karpenter_node.arn
  type          = "EC2_LINUX"

  tags = var.tags
}

resource "aws_sqs_queue" "karpenter_interruption" {
  name                      = local.interruption_queue_name
  message_retention_seconds = 300
  sqs_managed_sse_enabled   = true

  tags = var.tags
}

data "aws_iam_policy_document" "karpenter_interruption" {
  statement {
    sid       = "EventBridgeSends"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.karpenter_interruption.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "sqs.amazonaws.com"]
    }
  }

  statement {
    sid       = "DenyHTTP"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.karpenter_interruption.arn]

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

resource "aws_sqs_queue_policy" "karpenter_interruption" {
  queue_url = aws_sqs_queue.karpenter_interruption.url
  policy    = data.aws_iam_policy_document.karpenter_interruption.json
}

resource "aws_cloudwatch_event_rule" "karpenter_interruption" {
  for_each = local.interruption_events

  name        = "${var.cluster_name}-karpenter-${replace(each.key, "_", "-")}"
  description = "Karpenter of ${var.cluster_name}: ${each.value.detail_type}"
  event_pattern = jsonencode({
    source      = [each.value.source]
    detail-type = [each.value.detail_type]
  })

  tags = var.tags
}

resource "aws_cloudwatch_event_target" "karpenter_interruption" {
  for_each = local.interruption_events

  rule      = aws_cloudwatch_event_rule.karpenter_interruption[each.key].name
  target_id = "KarpenterInterruptionQueue"
  arn       = aws_sqs_queue.karpenter_interruption.arn
}
