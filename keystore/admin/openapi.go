package admin

import (
	_ "embed"
	"net/http"
	"strconv"
)

// openapiDocument is the OpenAPI 3.1 description of this API. It is kept
// beside the handlers, and the package's tests check every request and
// answer they make against it, so it cannot drift from them unnoticed.
//
//go:embed openapi.json
var openapiDocument []byte

const routeOpenAPI = "GET /v1/openapi.json"

// openapi serves the document as it is in the repository. It is public
// (see public): it holds no secret, and the tools that read it (a browser
// console, Swagger UI, client generators) fetch it before anyone signs in.
func (a *api) openapi(w http.ResponseWriter, _ *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	// Known in advance, so sent: HEAD answers the size, and clients need
	// not read a chunked body.
	h.Set("Content-Length", strconv.Itoa(len(openapiDocument)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openapiDocument)
	return nil
}
