# An AKS cluster and node pool for kiln's Ballista scheduler and executors.
# The scheduler and executor Deployments themselves are in kubernetes.tf.
terraform {
  required_version = ">= 1.5"
  required_providers {
    azurerm    = { source = "hashicorp/azurerm", version = "~> 4.0" }
    kubernetes = { source = "hashicorp/kubernetes", version = "~> 2.30" }
  }
}

provider "azurerm" {
  features {}
}

variable "name" {
  type    = string
  default = "kiln"
}

variable "location" {
  type    = string
  default = "westeurope"
}

variable "executor_nodes" {
  type    = number
  default = 3
}

variable "executor_vm_size" {
  type    = string
  default = "Standard_D8s_v5"
}

variable "image" {
  type        = string
  description = "kiln image built from docker/Dockerfile, e.g. myregistry.azurecr.io/kiln:0.1.0"
}

variable "storage_account" {
  type        = string
  description = "ADLS Gen2 account holding the lake (abfss://...)"
}

resource "azurerm_resource_group" "kiln" {
  name     = "${var.name}-rg"
  location = var.location
}

resource "azurerm_kubernetes_cluster" "kiln" {
  name                = "${var.name}-aks"
  location            = azurerm_resource_group.kiln.location
  resource_group_name = azurerm_resource_group.kiln.name
  dns_prefix          = var.name

  default_node_pool {
    name       = "system"
    node_count = 1
    vm_size    = "Standard_D4s_v5"
  }

  identity {
    type = "SystemAssigned"
  }
}

resource "azurerm_kubernetes_cluster_node_pool" "executors" {
  name                  = "executors"
  kubernetes_cluster_id = azurerm_kubernetes_cluster.kiln.id
  vm_size               = var.executor_vm_size
  node_count            = var.executor_nodes
  node_labels           = { "kiln/role" = "executor" }
}

output "kube_config" {
  value     = azurerm_kubernetes_cluster.kiln.kube_config_raw
  sensitive = true
}
