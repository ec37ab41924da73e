// Starts the Swagger UI of /docs (a file, not an inline script, so the page's CSP allows no inline code).
"use strict";
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapi,
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
});
