package main

import (
	"context"
	"crypto"
	"fmt"

	"github.com/credgw/credgw/activation/attest"
	hsmsim "github.com/credgw/credgw/hsm-sim"
	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/spf13/cobra"
)

// attestFlags are redeem's and renew's: attest the device keys with the
// simulated attestation vendor of hsm-sim (a real device's keystore does
// it in its own app; this exercises the gateway's verification).
type attestFlags struct{ dir, level string }

func (a *attestFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&a.dir, "attest-sim", "", "attest the device keys with the simulated attestation vendor in `DIR` (made if missing; credgw dev init makes hsm/attest-vendor)")
	cmd.Flags().StringVar(&a.level, "attest-level", "trusted_environment", "the simulated keystore's security level: trusted_environment, strongbox or software")
}

// fn returns the agent's attestation hook, or nil without --attest-sim.
func (a *attestFlags) fn() (func(context.Context, credgwv1.Profile, crypto.PublicKey, []byte) (*credgwv1.KeyAttestation, error), error) {
	if a.dir == "" {
		return nil, nil
	}
	level, err := attest.ParseSecurityLevel(a.level)
	if err != nil {
		return nil, fmt.Errorf("--attest-level: %w", err)
	}
	v, err := hsmsim.InitVendor(a.dir)
	if err != nil {
		return nil, fmt.Errorf("--attest-sim: %w", err)
	}
	return func(_ context.Context, _ credgwv1.Profile, pub crypto.PublicKey, challenge []byte) (*credgwv1.KeyAttestation, error) {
		chain, err := v.Attest(pub, challenge, hsmsim.AttestOptions{Level: level})
		if err != nil {
			return nil, err
		}
		return &credgwv1.KeyAttestation{Format: attest.FormatAndroidKey, CertificateChain: chain}, nil
	}, nil
}
