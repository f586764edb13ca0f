// selfsigned.go — shared by the programs tools/vcsim/build.sh builds (it copies this file beside each
// program's main.go): the simulator (main.go here) and countproxy/ serve TLS with a fresh self-signed
// certificate and write the files a test harness waits for atomically.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io/ioutil"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// selfSigned makes a self-signed RSA-2048 certificate for 127.0.0.1, ::1 and localhost, its subject
// organization org, valid from an hour ago for lifetime. It returns a TLS config serving it and the
// certificate in PEM. The certificate is a leaf (basicConstraints CA:FALSE): rustls/webpki (ureq's TLS)
// rejects a CA:TRUE certificate presented by a server with CaUsedAsEndEntity, while OpenSSL, Go and rustls
// all accept this self-signed leaf as its own trust root.
func selfSigned(org string, lifetime time.Duration) (*tls.Config, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	notBefore := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "127.0.0.1", Organization: []string{org}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(lifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false, // CA:FALSE - see above (rustls)
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pair, err := tls.X509KeyPair(pemCert, pemKey)
	if err != nil {
		return nil, nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}}, pemCert, nil
}

// writeAtomic writes data to path via a temp file in the same folder + rename.
func writeAtomic(path string, data []byte) error {
	tmp, err := ioutil.TempFile(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
