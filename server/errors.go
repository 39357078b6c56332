package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/credgw/credgw/activation"
	"github.com/credgw/credgw/activation/attest"
	actcode "github.com/credgw/credgw/activation/code"
	"github.com/credgw/credgw/issuance"
	"github.com/credgw/credgw/piv"
	"github.com/credgw/credgw/piv/session"
	"github.com/credgw/credgw/pkcs11"
	"github.com/credgw/credgw/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// toStatus maps a domain error onto a gRPC status (Boulder grpc/errors.go
// style): one place decides the codes. Messages are the domain errors' own,
// which never carry secrets.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var wrong *activation.WrongPasswordError
	if errors.As(err, &wrong) {
		st := status.New(codes.PermissionDenied, err.Error())
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: "WRONG_PASSWORD", Domain: "credgw",
			Metadata: map[string]string{"attempts_left": strconv.Itoa(wrong.AttemptsLeft)}}); derr == nil {
			st = d
		}
		return st.Err()
	}
	if errors.Is(err, store.ErrUnavailable) {
		// The driver's text names the database's address, user and
		// name: the operator's log has it (mapError), the client not.
		return status.Error(codes.Unavailable, dbUnavailable)
	}
	var hsm *pkcs11.UnavailableError
	if errors.As(err, &hsm) {
		// Token names, module paths and slots are for the operator's
		// log, not the device; the reason says enough to act on.
		return status.Error(codes.Unavailable, fmt.Sprintf("the CA's HSM is unavailable (%s): "+
			"check the HSM / PKCS#11 module and its slot; credgw retries on its own", hsm.Reason))
	}
	if errors.Is(err, pkcs11.ErrKeyChanged) {
		// The token re-created or replaced under the gateway: nothing is
		// signed or unsealed with a foreign key, and work resumes when
		// the key is back. The token's name is for the operator's log.
		return status.Error(codes.Unavailable, keyChanged)
	}
	code := codes.Internal
	switch {
	case errors.Is(err, activation.ErrNotAccepted), errors.Is(err, activation.ErrSessionTooOld):
		code = codes.Unauthenticated
	case errors.Is(err, activation.ErrLocked), errors.Is(err, activation.ErrCap):
		code = codes.ResourceExhausted
	case errors.Is(err, activation.ErrExpired), errors.Is(err, activation.ErrAlreadyRedeemed), errors.Is(err, activation.ErrHashMismatch):
		code = codes.FailedPrecondition
	case errors.Is(err, activation.ErrInProgress), errors.Is(err, activation.ErrAuditUnavailable):
		code = codes.Unavailable
	case errors.Is(err, activation.ErrNotYours):
		code = codes.NotFound
	case errors.Is(err, activation.ErrTerminated):
		code = codes.PermissionDenied
	case errors.Is(err, activation.ErrRenewalInProgress):
		code = codes.FailedPrecondition
	case errors.Is(err, activation.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, activation.ErrPermission):
		code = codes.PermissionDenied
	case errors.Is(err, activation.ErrPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, activation.ErrNoSuch):
		code = codes.NotFound
	case errors.Is(err, session.ErrUnknownChallenge):
		code = codes.NotFound
	case errors.Is(err, session.ErrReplay), errors.Is(err, session.ErrChallengeExpired):
		code = codes.FailedPrecondition
	case errors.Is(err, session.ErrSessionGone):
		code = codes.Unauthenticated
	case errors.Is(err, session.ErrNotTLSCard), errors.Is(err, session.ErrOtherCard):
		code = codes.PermissionDenied
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, piv.ErrMalformed):
		code = codes.InvalidArgument
	case errors.Is(err, piv.ErrBadSignature):
		code = codes.Unauthenticated
	case errors.Is(err, piv.ErrUntrusted), errors.Is(err, piv.ErrExpired), errors.Is(err, piv.ErrNotYetValid),
		errors.Is(err, piv.ErrPolicy), errors.Is(err, piv.ErrKeyUsage), errors.Is(err, piv.ErrKey),
		errors.Is(err, piv.ErrRevoked):
		code = codes.PermissionDenied
	case errors.Is(err, piv.ErrStatusUnavailable), errors.Is(err, attest.ErrStatusUnavailable),
		errors.Is(err, store.ErrRevokedMeanwhile): // a signing slower than the sweep's patience: retry
		code = codes.Unavailable
	case errors.Is(err, issuance.ErrNotIssued):
		code = codes.NotFound
	case errors.Is(err, issuance.ErrAlreadyRevoked), errors.Is(err, issuance.ErrNoEmail), errors.Is(err, issuance.ErrLint),
		errors.Is(err, issuance.ErrRefused), errors.Is(err, issuance.ErrOtherIssuer):
		code = codes.FailedPrecondition
	case errors.Is(err, issuance.ErrBadRequest), errors.Is(err, store.ErrInvalidText):
		code = codes.InvalidArgument
	case errors.Is(err, store.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, store.ErrAlreadyUsed):
		code = codes.FailedPrecondition
	}
	if code == codes.Internal {
		return status.Error(codes.Internal, "internal error; the incident is logged")
	}
	if errors.Is(err, issuance.ErrKeyReused) {
		// The device made a new key for a retry, or must: say so in a
		// way it can act on.
		st := status.New(code, err.Error())
		if d, derr := st.WithDetails(&errdetails.ErrorInfo{Reason: actcode.ReasonKeyCertifiedBefore, Domain: "credgw"}); derr == nil {
			st = d
		}
		return st.Err()
	}
	if errors.Is(err, activation.ErrInProgress) || errors.Is(err, activation.ErrAuditUnavailable) {
		// Being issued (by this call's twin, or by a process that died:
		// its claim is released within a minute): retry after a while.
		st := status.New(code, err.Error())
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(inProgressRetry)}); derr == nil {
			st = d
		}
		return st.Err()
	}
	return status.Error(code, err.Error())
}

// keyChanged is what a client is told when a key on the HSM is no longer
// the one the gateway opened.
const keyChanged = "a key on the gateway's HSM is not the key it was started with " +
	"(was the token re-created or replaced?): the operator must check the HSM; " +
	"the gateway refuses to use a foreign key and resumes when the key is back"

// dbUnavailable is what a client is told when the gateway's database is
// unreachable or failing over.
const dbUnavailable = "the gateway's database is unavailable: try again shortly (the cause is in the gateway's log)"

// inProgressRetry is the RetryInfo of a redemption being issued.
const inProgressRetry = 2 * time.Second
