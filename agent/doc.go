// Package agent is the reference device agent, what an Intune-like app does
// on the phone: read the QR code, ask the password, make the device keys,
// redeem over a gateway it trusts only through the pin in the QR code,
// download the package (resuming a cut connection), verify it, install the
// credentials as PKCS#12 files under the keystore PIN, and confirm.
package agent
