package server_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	credgwv1 "github.com/credgw/credgw/proto/credgw/v1"
	"github.com/credgw/credgw/server"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestDeviceFailuresPerAddress: the device calls anyone may make
// (Redeem, Confirm, Rekey) had no limit per source address, so one
// address could try codes, secrets and passwords as fast as the gateway
// answered (each a store read; a known code also a path built to the
// trust anchors it sent). Failed Redeem and Rekey calls from an address
// now spend its limits.rates.device_failures_per_address; past it the
// address's Redeem and Rekey calls are refused with ResourceExhausted and
// a RetryInfo, before any work, and what is refused spends nothing (the
// code stays good). Calls that succeed spend nothing, so a crowded NAT of
// honest devices is not limited by its own redemptions, and
// confirmations are never refused.
func TestDeviceFailuresPerAddress(t *testing.T) {
	s := limitedGateway(t, func(l *server.LimitsConfig) {
		l.Rates.DeviceFailuresPerAddress = server.Rate{PerSecond: 1e-6, Burst: 3} // no refill within the test
	})
	client := credgwv1.NewRedemptionClient(dialAddr(t, s.GRPCAddr()))
	ctx := context.Background()

	// A good redemption and its confirmation spend nothing.
	e := enrollCard(t)
	d, err := readStream(ctx, client, redeemRequest(t, e, e.resp.GetPassword()), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: d.redemptionID, Secret: e.payload.Secret, Sha256: d.sum}); err != nil {
		t.Fatal(err)
	}

	// A package downloaded, its confirmation still to come.
	waiting := enrollCard(t)
	dw, err := readStream(ctx, client, redeemRequest(t, waiting, waiting.resp.GetPassword()), 0)
	if err != nil {
		t.Fatal(err)
	}

	// Three failures: an unknown code, a wrong secret, a wrong password.
	// A wrong confirmation is no failure here (it needs a redemption id
	// and the secret; counting it would let a neighbour spend them).
	other := enrollCard(t)
	unknown := redeemRequest(t, other, other.resp.GetPassword())
	unknown.ActivationId = "AAAAAAAAAAAAAAAAAAAAAA"
	_, err = readStream(ctx, client, unknown, 0)
	wantCode(t, err, codes.Unauthenticated)
	badSecret := redeemRequest(t, other, other.resp.GetPassword())
	badSecret.Secret = bytes.Repeat([]byte{9}, 32)
	_, err = readStream(ctx, client, badSecret, 0)
	wantCode(t, err, codes.Unauthenticated)
	for range 3 {
		_, err = client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: "no-such-redemption", Secret: other.payload.Secret, Sha256: make([]byte, 32)})
		if status.Code(err) == codes.OK || status.Code(err) == codes.ResourceExhausted {
			t.Fatalf("confirming an unknown redemption: %v", err)
		}
	}
	wrong := "00000000"
	if wrong == other.resp.GetPassword() {
		wrong = "11111111"
	}
	_, err = readStream(ctx, client, redeemRequest(t, other, wrong), 0)
	wantCode(t, err, codes.PermissionDenied)

	// The address has spent its failures: every device call from it is
	// refused before any work, with when to come back.
	refused := func(what string, err error) {
		t.Helper()
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "this address") {
			t.Fatalf("%s from a spent address: %v, want ResourceExhausted naming the address", what, err)
		}
		var retry bool
		for _, d := range st.Details() {
			_, retry = d.(*errdetails.RetryInfo)
		}
		if !retry {
			t.Fatalf("%s: no RetryInfo in %v", what, st.Details())
		}
	}
	_, err = readStream(ctx, client, unknown, 0)
	refused("an unknown code", err)
	_, err = readStream(ctx, client, redeemRequest(t, other, other.resp.GetPassword()), 0)
	refused("the right code and password", err)
	// A confirmation is never refused for the address: the device behind
	// it installed what it downloaded (a neighbour trying codes must not
	// get its package revoked when the confirmation window closes).
	if _, err := client.Confirm(ctx, &credgwv1.ConfirmRequest{RedemptionId: dw.redemptionID, Secret: waiting.payload.Secret, Sha256: dw.sum}); err != nil {
		t.Fatalf("the confirmation of a package downloaded before: %v", err)
	}
	rekey, err := credgwv1.NewRenewalClient(dialAddr(t, s.GRPCAddr())).Rekey(ctx, &credgwv1.RekeyRequest{})
	if err == nil {
		_, err = rekey.Recv()
	}
	refused("a renewal", err)

	// The refused redemption spent nothing: the same code and password
	// redeem elsewhere (the shared gateway, another replica's budget).
	if _, err := readStream(ctx, credgwv1.NewRedemptionClient(dial(t)), redeemRequest(t, other, other.resp.GetPassword()), 0); err != nil {
		t.Fatalf("the code refused at a spent address: %v", err)
	}
}
