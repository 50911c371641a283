# Offline plan with a mocked AWS provider (terraform test): the names the Kubernetes side
# relies on (k8s/cluster-addons: ServiceAccounts, the Karpenter node role and queue), the
# EKS managed add-ons, and that the vendored IAM policies parse. Run by
# scripts/ops/check-terraform; scripts/ops/check-k8s checks the same names from the
# manifests' side.
mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = { account_id = "123456789012" }
  }

  mock_data "aws_partition" {
    defaults = { partition = "aws" }
  }

  mock_data "aws_region" {
    defaults = { name = "eu-west-1" }
  }

  mock_data "aws_iam_policy_document" {
    defaults = { json = "{}" }
  }

  # Valid ARNs for `apply` against the mock (the provider validates them).
  mock_resource "aws_iam_role" {
    defaults = { arn = "arn:aws:iam::123456789012:role/mock" }
  }

  mock_resource "aws_iam_policy" {
    defaults = { arn = "arn:aws:iam::123456789012:policy/mock" }
  }

  mock_resource "aws_sqs_queue" {
    defaults = {
      arn = "arn:aws:sqs:eu-west-1:123456789012:todo-qa-karpenter"
      url = "https://sqs.eu-west-1.amazonaws.com/123456789012/todo-qa-karpenter"
    }
  }
}

variables {
  cluster_name               = "todo-qa"
  application_log_group_arns = ["arn:aws:logs:eu-west-1:123456789012:log-group:/todo/qa/todo-service"]
}

run "managed_addons_and_pod_identities" {
  command = plan

  assert {
    condition     = output.managed_addons == ["eks-pod-identity-agent", "aws-ebs-csi-driver", "metrics-server"]
    error_message = "The cluster needs the Pod Identity agent, the EBS CSI driver and metrics-server as EKS add-ons."
  }

  assert {
    condition     = one(aws_eks_addon.ebs_csi.pod_identity_association).service_account == "ebs-csi-controller-sa"
    error_message = "The EBS CSI driver's controller ServiceAccount must get its role through Pod Identity."
  }

  assert {
    condition = (
      aws_eks_pod_identity_association.this["lb_controller"].namespace == "kube-system"
      && aws_eks_pod_identity_association.this["lb_controller"].service_account == "aws-load-balancer-controller"
    )
    error_message = "The Load Balancer Controller's role must be associated with kube-system/aws-load-balancer-controller (its Application's serviceAccount.name)."
  }

  assert {
    condition = (
      aws_eks_pod_identity_association.this["karpenter"].namespace == "kube-system"
      && aws_eks_pod_identity_association.this["karpenter"].service_account == "karpenter"
    )
    error_message = "Karpenter's role must be associated with kube-system/karpenter (its Application's serviceAccount.name)."
  }

  assert {
    condition = (
      aws_eks_pod_identity_association.this["fluent_bit"].namespace == "logging"
      && aws_eks_pod_identity_association.this["fluent_bit"].service_account == "fluent-bit"
    )
    error_message = "Fluent Bit's role must be associated with logging/fluent-bit (its Application's serviceAccount.name)."
  }

  assert {
    condition = (
      aws_eks_pod_identity_association.this["otel_collector"].namespace == "monitoring"
      && aws_eks_pod_identity_association.this["otel_collector"].service_account == "otel-collector"
    )
    error_message = "The OpenTelemetry collector's role must be associated with monitoring/otel-collector (its Application's serviceAccount.name)."
  }

  assert {
    condition     = aws_iam_role.pod_identity["otel_collector"].name == "todo-qa-otel-collector"
    error_message = "The collector's role is <cluster>-otel-collector (k8s/cluster-addons/base/otel-collector.yaml names it)."
  }
}

# The collector's X-Ray policy document as configured (the mock renders no JSON): four
# actions, nothing else.
run "otel_collector_may_only_send_traces" {
  command = plan

  assert {
    condition = toset(one(data.aws_iam_policy_document.otel_collector.statement).actions) == toset([
      "xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
    ])
    error_message = "The collector may only put trace segments and telemetry records and read sampling rules and targets."
  }

  assert {
    condition     = length(data.aws_iam_policy_document.otel_collector.statement) == 1
    error_message = "The collector's policy has exactly one statement."
  }
}

# apply against the mock: the policies embed ARNs that a plan does not know yet.
run "karpenter_names_and_policies" {
  command = apply

  assert {
    condition     = output.karpenter_node_role_name == "todo-qa-karpenter-node"
    error_message = "The EC2NodeClass of k8s/cluster-addons names the node role <cluster>-karpenter-node."
  }

  assert {
    condition     = output.karpenter_interruption_queue_name == "todo-qa-karpenter"
    error_message = "The karpenter Application's settings.interruptionQueue is <cluster>-karpenter."
  }

  assert {
    condition     = aws_eks_access_entry.karpenter_node.type == "EC2_LINUX"
    error_message = "Karpenter's nodes join through an EC2_LINUX access entry of their role."
  }

  assert {
    condition     = length(aws_cloudwatch_event_rule.karpenter_interruption) == 5
    error_message = "Karpenter needs the five interruption event rules of its getting-started template."
  }

  assert {
    condition     = toset(keys(local.karpenter_policies)) == local.karpenter_policy_names
    error_message = "karpenter_policy_names must list exactly the policies of policies/karpenter-controller.json.tftpl."
  }

  assert {
    condition = alltrue([
      for p in aws_iam_policy.karpenter : length(jsondecode(p.policy).Statement) > 0
    ])
    error_message = "Every Karpenter controller policy must render to a policy with statements."
  }

  assert {
    condition = strcontains(
      aws_iam_policy.karpenter["IAMIntegrationPolicy"].policy, aws_iam_role.karpenter_node.arn
    )
    error_message = "Karpenter may pass exactly its node role (iam:PassRole)."
  }

  assert {
    condition     = length(jsondecode(aws_iam_policy.lb_controller.policy).Statement) > 10
    error_message = "The Load Balancer Controller's vendored policy must parse."
  }
}
