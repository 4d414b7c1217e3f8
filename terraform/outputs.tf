output "resource_group" {
  description = "az aks get-credentials --resource-group <this> --name <aks_name>"
  value       = azurerm_resource_group.kiln.name
}

output "aks_name" {
  value = azurerm_kubernetes_cluster.kiln.name
}

output "registry_login_server" {
  description = "docker tag kiln:0.1.0 <this>/kiln:0.1.0 && docker push <this>/kiln:0.1.0"
  value       = azurerm_container_registry.kiln.login_server
}

output "kiln_identity_client_id" {
  description = "Paste into deploy/serviceaccount.yaml (azure.workload.identity/client-id)."
  value       = azurerm_user_assigned_identity.kiln.client_id
}

output "lake_uri" {
  description = "kiln submit --conf kiln.storage.root=<this>"
  value       = "abfss://${azurerm_storage_data_lake_gen2_filesystem.lake.name}@${azurerm_storage_account.lake.name}.dfs.core.windows.net/"
}
