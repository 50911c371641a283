output "cluster_name" {
  description = "Name of the EKS cluster (aws eks update-kubeconfig --name ...)."
  value       = aws_eks_cluster.this.name
}

output "node_group_cluster_name" {
  description = "The cluster name, known once the managed node group exists: add-ons that run pods (modules/cluster-addons) take it to wait for nodes."
  value       = aws_eks_node_group.this.cluster_name
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the API server (public, for kubeconfig)."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_primary_security_group_id" {
  description = "Security group EKS created for the cluster (attached to control plane ENIs)."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider for IRSA (other controllers' roles trust it)."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "node_role_arn" {
  description = "IAM role of the managed nodes."
  value       = aws_iam_role.node.arn
}

output "service_role_arn" {
  description = "IRSA role of todo-service: annotate its ServiceAccount with eks.amazonaws.com/role-arn set to this."
  value       = aws_iam_role.service.arn
}

output "service_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the service's runtime secrets (read by External Secrets / the CSI driver with the IRSA role)."
  value       = aws_secretsmanager_secret.service.arn
}

output "service_secret_name" {
  description = "Name of the service's Secrets Manager secret."
  value       = aws_secretsmanager_secret.service.name
}
