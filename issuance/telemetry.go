package issuance

import (
	"context"
	"crypto"
	"io"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// tracer is the CA's, from the global provider: a no-op until the gateway
// installs one. Spans carry serial numbers and profile names, never key
// material, PINs or the bytes signed.
//
// It is looked up at each span, not kept: the gateway may install and
// replace the global provider after this package is loaded.
func tracer() trace.Tracer { return otel.Tracer("github.com/credgw/credgw/issuance") }

// observedSigner is the CA key with a span ("hsm.sign") and a latency
// observation (Config.Signed) around each signature: certificates, CRLs
// and OCSP responses.
type observedSigner struct {
	key    crypto.Signer
	signed func(time.Duration)
}

func (s *observedSigner) Public() crypto.PublicKey { return s.key.Public() }

func (s *observedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.observe(context.Background(), "digest", func() ([]byte, error) { return s.key.Sign(r, digest, opts) })
}

func (s *observedSigner) SignMessage(r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.signMessage(context.Background(), r, msg, opts)
}

// signMessage signs msg under ctx's span (the issuance it belongs to).
func (s *observedSigner) signMessage(ctx context.Context, r io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.observe(ctx, "message", func() ([]byte, error) { return crypto.SignMessage(s.key, r, msg, opts) })
}

func (s *observedSigner) observe(ctx context.Context, input string, sign func() ([]byte, error)) ([]byte, error) {
	_, span := tracer().Start(ctx, "hsm.sign", trace.WithAttributes(attribute.String("credgw.sign.input", input)))
	defer span.End()
	start := time.Now()
	sig, err := sign()
	if s.signed != nil {
		s.signed(time.Since(start))
	}
	if err != nil {
		span.SetStatus(codes.Error, "the CA key did not sign")
	}
	return sig, err
}
