output "alb_security_group_id" {
  description = "Security group for the ALB; pass it to the Ingress annotation alb.ingress.kubernetes.io/security-groups (with manage-backend-security-group-rules: false)."
  value       = aws_security_group.alb.id
}

output "pods_security_group_id" {
  description = "Security group for todo-service pods; reference it from a SecurityGroupPolicy selecting app=todo-service."
  value       = aws_security_group.pods.id
}

output "rds_security_group_id" {
  description = "Security group of the RDS instance."
  value       = aws_security_group.rds.id
}

output "cluster_security_group_id" {
  description = "Additional security group of the EKS control plane."
  value       = aws_security_group.cluster.id
}

output "nodes_security_group_id" {
  description = "Security group of the EKS managed node group."
  value       = aws_security_group.nodes.id
}
