# The Azure footprint of kiln, as the thesis ran it: AKS with a system pool
# and an autoscaling executor pool, a container registry the cluster pulls
# from, and an ADLS Gen2 lake that kiln's pods reach through workload
# identity (no stored credential). Apply, then follow README "Deploying to
# Kubernetes" with the outputs.

data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "kiln" {
  name     = "${var.name}-rg"
  location = var.location
}

resource "azurerm_log_analytics_workspace" "kiln" {
  name                = "${var.name}-logs"
  location            = azurerm_resource_group.kiln.location
  resource_group_name = azurerm_resource_group.kiln.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
}

# --- Container registry --------------------------------------------------

resource "azurerm_container_registry" "kiln" {
  #checkov:skip=CKV_AZURE_165:single-region deployment; add georeplications when the cluster spans regions
  #checkov:skip=CKV_AZURE_139:images are pushed from CI outside the VNet; pulls use the kubelet identity (AcrPull), admin user off
  name                          = "${var.name}acr${random_string.suffix.result}"
  location                      = azurerm_resource_group.kiln.location
  resource_group_name           = azurerm_resource_group.kiln.name
  sku                           = "Premium"
  admin_enabled                 = false
  public_network_access_enabled = true
  quarantine_policy_enabled     = true
  retention_policy_in_days      = 30
  trust_policy_enabled          = true
  zone_redundancy_enabled       = true
  data_endpoint_enabled         = true
}

resource "random_string" "suffix" {
  length  = 6
  upper   = false
  special = false
}

# --- Kubernetes ----------------------------------------------------------

resource "azurerm_kubernetes_cluster" "kiln" {
  #checkov:skip=CKV_AZURE_117:host encryption is on; a customer-managed disk encryption set needs a Key Vault this footprint does not manage
  #checkov:skip=CKV_AZURE_232:the scheduler and the job service run on the system pool; executors have their own tainted pool
  #checkov:skip=CKV_AZURE_6:authorized ranges come from the required variable api_server_authorized_ip_ranges (validated non-empty), which checkov cannot resolve
  #checkov:skip=CKV_AZURE_115:the API server is restricted to api_server_authorized_ip_ranges instead of a private cluster, so CI can deploy
  name                      = "${var.name}-aks"
  location                  = azurerm_resource_group.kiln.location
  resource_group_name       = azurerm_resource_group.kiln.name
  dns_prefix                = var.name
  kubernetes_version        = var.kubernetes_version
  sku_tier                  = "Standard"
  automatic_upgrade_channel = "patch"
  oidc_issuer_enabled       = true
  workload_identity_enabled = true
  local_account_disabled    = true
  azure_policy_enabled      = true

  api_server_access_profile {
    authorized_ip_ranges = var.api_server_authorized_ip_ranges
  }

  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    auto_scaling_enabled         = true
    min_count                    = 1
    max_count                    = 3
    max_pods                     = 50
    only_critical_addons_enabled = false
    os_disk_type                 = "Ephemeral"
    host_encryption_enabled      = true
    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled = true
    tenant_id          = data.azurerm_client_config.current.tenant_id
  }

  network_profile {
    network_plugin = "azure"
    network_policy = "azure"
  }

  oms_agent {
    log_analytics_workspace_id = azurerm_log_analytics_workspace.kiln.id
  }

  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  web_app_routing {
    dns_zone_ids = []
  }
}

# Executors only: tainted so that nothing else lands there, labelled for
# deploy/executor.yaml's nodeSelector.
resource "azurerm_kubernetes_cluster_node_pool" "executors" {
  name                    = "executors"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.kiln.id
  vm_size                 = var.executor_vm_size
  auto_scaling_enabled    = true
  min_count               = var.executor_min_nodes
  max_count               = var.executor_max_nodes
  max_pods                = 50
  os_disk_type            = "Ephemeral"
  host_encryption_enabled = true
  node_labels             = { "kiln/role" = "executor" }
  node_taints             = ["kiln/role=executor:NoSchedule"]
}

resource "azurerm_role_assignment" "aks_pulls_images" {
  scope                            = azurerm_container_registry.kiln.id
  role_definition_name             = "AcrPull"
  principal_id                     = azurerm_kubernetes_cluster.kiln.kubelet_identity[0].object_id
  skip_service_principal_aad_check = true
}

# --- The lake: ADLS Gen2 -------------------------------------------------

resource "azurerm_storage_account" "lake" {
  #checkov:skip=CKV_AZURE_59:access is by Entra ID only (shared keys and local users off); network isolation needs a VNet-integrated cluster (private endpoint), left to the installation
  #checkov:skip=CKV2_AZURE_33:see CKV_AZURE_59
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; customer-managed keys need a Key Vault this footprint does not manage
  #checkov:skip=CKV_AZURE_33:the lake uses no queues
  name                            = "${var.name}lake${random_string.suffix.result}"
  location                        = azurerm_resource_group.kiln.location
  resource_group_name             = azurerm_resource_group.kiln.name
  account_kind                    = "StorageV2"
  account_tier                    = "Standard"
  account_replication_type        = "GZRS"
  is_hns_enabled                  = true
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  shared_access_key_enabled       = false
  local_user_enabled              = false
  allow_nested_items_to_be_public = false
  default_to_oauth_authentication = true
  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
}

resource "azurerm_storage_data_lake_gen2_filesystem" "lake" {
  name               = var.lake_filesystem
  storage_account_id = azurerm_storage_account.lake.id
}

# --- kiln's identity: the pods' service account, federated --------------

resource "azurerm_user_assigned_identity" "kiln" {
  name                = "${var.name}-workload"
  location            = azurerm_resource_group.kiln.location
  resource_group_name = azurerm_resource_group.kiln.name
}

resource "azurerm_federated_identity_credential" "kiln" {
  name                = "${var.name}-service-account"
  resource_group_name = azurerm_resource_group.kiln.name
  parent_id           = azurerm_user_assigned_identity.kiln.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.kiln.oidc_issuer_url
  subject             = "system:serviceaccount:${var.namespace}:kiln"
}

resource "azurerm_role_assignment" "kiln_reads_and_writes_the_lake" {
  scope                = azurerm_storage_account.lake.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.kiln.principal_id
}
