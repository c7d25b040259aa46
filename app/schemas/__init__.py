"""Request and response bodies, one module per resource (API.md is the contract; extra
fields are ours). ``common`` holds the field types and the error shape they share."""
