package issuance

import (
	_ "github.com/smallstep/certificates/authority"
	_ "github.com/zmap/zlint/v3"
	_ "go.step.sm/crypto/x509util"
)
