"""The web layer: the request pipeline every route runs through (`http`), the RBAC table
(`policy`) and the OpenAPI documents (`openapi`). Imports the platform layer and identity."""
