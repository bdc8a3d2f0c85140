//! Certificate pinning for `--upstream-ca`: a certificate in that file that is exactly the
//! one a server presents is trusted as that server's certificate.
//!
//! A self-signed certificate made the usual way (`openssl req -x509 ...`) says
//! `basicConstraints CA:TRUE`, and WebPKI refuses a CA certificate as a server's own
//! (`CaUsedAsEndEntity`), although `curl --cacert self.pem` accepts it. Pinning accepts it
//! and still checks what matters: the name the proxy dialled and the validity period. The
//! handshake signature is checked as for any certificate. Every other certificate goes
//! through WebPKI as before.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::lazy::LazyWebPki;

/// WebPKI, plus the pinned certificates.
#[derive(Debug)]
pub(super) struct PinningVerifier {
    webpki: LazyWebPki,
    pinned: Vec<CertificateDer<'static>>,
}

impl PinningVerifier {
    pub(super) fn new(webpki: LazyWebPki, pinned: Vec<CertificateDer<'static>>) -> Self {
        Self { webpki, pinned }
    }
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pinned.iter().any(|pin| pin.as_ref() == end_entity.as_ref()) {
            verify_pinned(end_entity, server_name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The checks a pinned certificate still has to pass: its names cover `server_name`, and
/// `now` lies within its validity period.
fn verify_pinned(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), CertificateError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| CertificateError::BadEncoding)?;
    parsed
        .verify_is_valid_for_subject_name(server_name)
        .map_err(|_| CertificateError::NotValidForName)?;
    let (not_before, not_after) = validity(cert.as_ref()).ok_or(CertificateError::BadEncoding)?;
    let now = now.as_secs();
    if now < not_before {
        return Err(CertificateError::NotValidYet);
    }
    if now > not_after {
        return Err(CertificateError::Expired);
    }
    Ok(())
}

/// `notBefore` and `notAfter` of a DER certificate, in Unix seconds (RFC 5280 §4.1):
/// `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... } ... }`.
/// WebPKI reads the same field but does not expose it.
fn validity(der: &[u8]) -> Option<(u64, u64)> {
    const SEQUENCE: u8 = 0x30;
    let (certificate, _) = element(der, SEQUENCE)?;
    let (mut tbs, _) = element(certificate, SEQUENCE)?;
    if tbs.first() == Some(&0xa0) {
        tbs = element(tbs, 0xa0)?.1;
    }
    let (_serial, rest) = element(tbs, 0x02)?;
    let (_signature, rest) = element(rest, SEQUENCE)?;
    let (_issuer, rest) = element(rest, SEQUENCE)?;
    let (validity, _) = element(rest, SEQUENCE)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some((not_before, not_after))
}

/// The content of the DER element of type `tag` at the start of `input`, and what follows.
fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&found, rest) = input.split_first()?;
    if found != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        short @ 0..=0x7f => (usize::from(short), rest),
        long => {
            let count = usize::from(long & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let (digits, rest) = rest.split_at(count);
            let len = digits.iter().fold(0usize, |len, &b| (len << 8) | usize::from(b));
            (len, rest)
        }
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// Unix seconds, and what follows it.
fn time(input: &[u8]) -> Option<(u64, &[u8])> {
    let (text, rest, year) = match input.first()? {
        0x17 => {
            let (text, rest) = element(input, 0x17)?;
            let yy = digits(text.get(..2)?)?;
            (text.get(2..)?, rest, if yy < 50 { 2000 + yy } else { 1900 + yy })
        }
        0x18 => {
            let (text, rest) = element(input, 0x18)?;
            (text.get(4..)?, rest, digits(text.get(..4)?)?)
        }
        _ => return None,
    };
    if text.len() != 11 || text[10] != b'Z' {
        return None;
    }
    let field = |at: usize| digits(&text[at..at + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some((days * 86_400 + hour * 3_600 + minute * 60 + second, rest))
}

fn digits(text: &[u8]) -> Option<u64> {
    text.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`); `None` before 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let year = if month <= 2 { year.checked_sub(1)? } else { year };
    let era = year / 400;
    let year_of_era = year % 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(not_before: (i32, u8, u8), not_after: (i32, u8, u8)) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn reads_utc_and_generalized_times() {
        // rcgen writes UTCTime before 2050 and GeneralizedTime from 2050 on.
        let cert = certificate((2020, 1, 2), (2051, 3, 4));
        assert_eq!(validity(&cert), Some((1_577_923_200, 2_561_500_800)));
    }

    #[test]
    fn days_match_the_calendar() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(days_from_civil(2024, 2, 29), Some(19_782));
        assert_eq!(days_from_civil(1969, 12, 31), None);
    }

    #[test]
    fn a_pinned_certificate_must_name_the_server_and_be_current() {
        let cert = certificate((2020, 1, 1), (2040, 1, 1));
        let at = |year_secs: u64| UnixTime::since_unix_epoch(std::time::Duration::from_secs(year_secs));
        let localhost = ServerName::try_from("localhost").unwrap();
        let now = at(1_800_000_000); // 2027
        assert_eq!(verify_pinned(&cert, &localhost, now), Ok(()));
        let other = ServerName::try_from("example.com").unwrap();
        assert_eq!(
            verify_pinned(&cert, &other, now),
            Err(CertificateError::NotValidForName)
        );
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        assert_eq!(
            verify_pinned(&cert, &ip, now),
            Err(CertificateError::NotValidForName)
        );
        assert_eq!(
            verify_pinned(&cert, &localhost, at(1_500_000_000)),
            Err(CertificateError::NotValidYet)
        );
        assert_eq!(
            verify_pinned(&cert, &localhost, at(2_300_000_000)),
            Err(CertificateError::Expired)
        );
    }

    #[test]
    fn refuses_what_is_not_a_certificate() {
        for der in [
            &b""[..],
            b"\x30",
            b"\x30\x85\x00\x00\x00\x00\x00",
            b"\x30\x03\x02\x01\x00",
        ] {
            assert_eq!(validity(der), None, "{der:?}");
        }
    }
}
