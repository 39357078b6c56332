package pkcs11

import (
	"errors"
	"fmt"

	p11 "github.com/miekg/pkcs11"
)

// Errors a caller may branch on with errors.Is.
var (
	// ErrModule means the PKCS#11 module could not be loaded or initialised.
	ErrModule = errors.New("pkcs11: module unavailable")
	// ErrTokenNotFound means no token matched the label or serial.
	ErrTokenNotFound = errors.New("pkcs11: token not found")
	// ErrObjectNotFound means no object matched the class, CKA_ID and label.
	ErrObjectNotFound = errors.New("pkcs11: object not found")
	// ErrPINIncorrect means the token refused the PIN.
	ErrPINIncorrect = errors.New("pkcs11: PIN incorrect")
	// ErrPINLocked means the token has blocked the PIN.
	ErrPINLocked = errors.New("pkcs11: PIN locked")
	// ErrPINRequired means the operation needs a PIN and none was configured.
	ErrPINRequired = errors.New("pkcs11: PIN required")
	// ErrTokenUnavailable means the token or the device behind it cannot
	// be used right now: removed, not present, its sessions lost, the
	// device failing. It is transient as far as credgw can tell: the next
	// call reconnects. The error is an *UnavailableError saying why.
	ErrTokenUnavailable = errors.New("pkcs11: token unavailable")
	// ErrDecrypt means a decryption failed: wrong key, or the data was
	// tampered with.
	ErrDecrypt = errors.New("pkcs11: decryption failed")
	// ErrKeyChanged means a key's CKA_ID (and label) now names a
	// different key than when the Signer or AESKey was opened (the token
	// was re-created, or another token has its label). Nothing is signed,
	// sealed or opened with the other key.
	ErrKeyChanged = errors.New("pkcs11: key changed")
	// ErrTokenChanged: the token a Token opened is gone and another with
	// another serial carries its label (a card swapped for the holder's
	// replacement, a re-initialised HSM slot). Its PIN is not sent to it.
	ErrTokenChanged = errors.New("pkcs11: another token under the label")
	// ErrClosed means the module or token was closed.
	ErrClosed = errors.New("pkcs11: closed")
)

// UnavailableError is a token that cannot be used right now. It is
// errors.Is ErrTokenUnavailable, and unwraps to the PKCS#11 return value (a
// miekg/pkcs11 Error) or to the error that made the token unreachable.
type UnavailableError struct {
	// Op names the token as configured, or what credgw was doing with
	// it; never its PIN.
	Op string
	// Reason says in a few words what the module reported, e.g.
	// "token not present", "session lost", "device error".
	Reason string
	Err    error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("%v: %s (%s): %v (check the HSM, the PKCS#11 module and its slot; the next call reconnects)",
		ErrTokenUnavailable, e.Op, e.Reason, e.Err)
}

// Is makes errors.Is(err, ErrTokenUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrTokenUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }

// unavailableReason classifies a PKCS#11 return value: the ones that mean
// the token, its slot, its sessions or its device are gone or failing, not
// that the request was wrong. CKR_GENERAL_ERROR is not among them: modules
// also return it for plain operation failures (SoftHSM: a bad GCM tag), so
// Token.do asks the session whether it still answers before calling the
// token unavailable.
func unavailableReason(rv uint) (string, bool) {
	switch rv {
	case p11.CKR_TOKEN_NOT_PRESENT:
		return "token not present", true
	case p11.CKR_TOKEN_NOT_RECOGNIZED:
		return "token not recognised", true
	case p11.CKR_DEVICE_REMOVED:
		return "device removed", true
	case p11.CKR_DEVICE_ERROR:
		return "device error", true
	case p11.CKR_DEVICE_MEMORY:
		return "device out of memory", true
	case p11.CKR_SESSION_HANDLE_INVALID:
		return "session lost", true
	case p11.CKR_SESSION_CLOSED:
		return "session closed", true
	case p11.CKR_SLOT_ID_INVALID:
		return "slot gone", true
	case p11.CKR_CRYPTOKI_NOT_INITIALIZED:
		return "module not initialised", true
	}
	return "", false
}

// unavailable wraps err as an *UnavailableError of op if its PKCS#11
// return value says the token or device is gone, and reports whether it
// did.
func unavailable(op string, err error) (error, bool) {
	var u *UnavailableError
	if errors.As(err, &u) {
		return err, true
	}
	rv, ok := returnValue(err)
	if !ok {
		return err, false
	}
	reason, ok := unavailableReason(rv)
	if !ok {
		return err, false
	}
	return &UnavailableError{Op: op, Reason: reason, Err: err}, true
}

// returnValue extracts the PKCS#11 return code of err, if it carries one.
func returnValue(err error) (uint, bool) {
	var e p11.Error
	if errors.As(err, &e) {
		return uint(e), true
	}
	return 0, false
}

// is reports whether err carries the PKCS#11 return code rv.
func is(err error, rv uint) bool {
	got, ok := returnValue(err)
	return ok && got == rv
}

// sessionLost reports whether err means the session, its login or the token
// behind it is gone, so the pool must reopen sessions and log in again.
func sessionLost(err error) bool {
	rv, ok := returnValue(err)
	if !ok {
		return false
	}
	switch rv {
	case p11.CKR_SESSION_HANDLE_INVALID, p11.CKR_SESSION_CLOSED,
		p11.CKR_DEVICE_REMOVED, p11.CKR_TOKEN_NOT_PRESENT,
		p11.CKR_TOKEN_NOT_RECOGNIZED, p11.CKR_SLOT_ID_INVALID,
		p11.CKR_OBJECT_HANDLE_INVALID, p11.CKR_KEY_HANDLE_INVALID,
		p11.CKR_CRYPTOKI_NOT_INITIALIZED, p11.CKR_USER_NOT_LOGGED_IN,
		p11.CKR_DEVICE_ERROR, p11.CKR_GENERAL_ERROR:
		return true
	}
	return false
}

// opError wraps a PKCS#11 failure with what credgw was doing. PKCS#11 return
// codes never carry PINs, so the wrapped text is safe to show.
func opError(op string, err error) error {
	if err == nil {
		return nil
	}
	switch {
	case is(err, p11.CKR_PIN_INCORRECT), is(err, p11.CKR_PIN_INVALID), is(err, p11.CKR_PIN_LEN_RANGE):
		return fmt.Errorf("%w (%s refused by the token: check the PIN source)", ErrPINIncorrect, op)
	case is(err, p11.CKR_PIN_LOCKED):
		return fmt.Errorf("%w (%s: unblock the PIN with the PUK or SO PIN)", ErrPINLocked, op)
	}
	if u, ok := unavailable(op, err); ok && u != err {
		return u
	}
	return fmt.Errorf("pkcs11: %s: %w", op, err)
}
