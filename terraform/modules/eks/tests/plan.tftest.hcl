# Offline plan with a mocked AWS provider (terraform test) of what the manifests in k8s/
# rely on from the cluster itself: the VPC CNI enforces NetworkPolicies (else they are
# accepted and ignored) and gives pods their security groups. Run by scripts/ops/check-terraform.
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

  mock_resource "aws_eks_cluster" {
    defaults = {
      identity = [{ oidc = [{ issuer = "https://oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE" }] }]
    }
  }
}

variables {
  name                      = "todo-qa"
  private_subnet_ids        = ["subnet-1", "subnet-2", "subnet-3"]
  cluster_security_group_id = "sg-cluster"
  node_security_group_id    = "sg-nodes"
  log_kms_key_arn           = "arn:aws:kms:eu-west-1:123456789012:key/example"
  db_resource_id            = "db-EXAMPLE"
}

run "vpc_cni_enforces_network_policies" {
  command = plan

  assert {
    condition     = jsondecode(aws_eks_addon.vpc_cni.configuration_values).enableNetworkPolicy == "true"
    error_message = "The VPC CNI must run its network policy agent (enableNetworkPolicy), or k8s/base's NetworkPolicies are not enforced."
  }

  assert {
    condition = (
      jsondecode(aws_eks_addon.vpc_cni.configuration_values).env.ENABLE_POD_ENI == "true"
      && jsondecode(aws_eks_addon.vpc_cni.configuration_values).env.POD_SECURITY_GROUP_ENFORCING_MODE == "standard"
    )
    error_message = "Security groups for pods (k8s/base/securitygrouppolicy.yaml) need ENABLE_POD_ENI, in standard mode so NetworkPolicies apply to those pods too."
  }
}
