package main
import (_ "github.com/miekg/pkcs11"; _ "github.com/spf13/cobra"; _ "golang.org/x/crypto/ocsp")
func main(){}
