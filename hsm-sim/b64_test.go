package hsmsim

import (
	"encoding/base64"
	"net/url"
)

// base64URLPath is the RFC 6960 App. A.1 GET path element.
func base64URLPath(der []byte) string {
	return url.PathEscape(base64.StdEncoding.EncodeToString(der))
}
