output "karpenter_node_role_name" {
  description = "IAM role of the nodes Karpenter launches: spec.role of the EC2NodeClass in k8s/cluster-addons/overlays/<env>."
  value       = aws_iam_role.karpenter_node.name
}

output "karpenter_interruption_queue_name" {
  description = "SQS queue of Karpenter's interruption events: settings.interruptionQueue of the karpenter Application."
  value       = aws_sqs_queue.karpenter_interruption.name
}

output "pod_identity_role_arns" {
  description = "IAM roles of the add-ons that call AWS (EBS CSI driver, AWS Load Balancer Controller, Karpenter, Fluent Bit, OpenTelemetry collector), by add-on, each associated with its ServiceAccount through EKS Pod Identity."
  value       = { for k, role in aws_iam_role.pod_identity : k => role.arn }
}

output "managed_addons" {
  description = "EKS managed add-ons this module installs."
  value       = [aws_eks_addon.pod_identity_agent.addon_name, aws_eks_addon.ebs_csi.addon_name, aws_eks_addon.metrics_server.addon_name]
}
