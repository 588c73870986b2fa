//! Printing a voucher slip from the staff page on a lane's receipt printer: the printers are the
//! `[[printer_proxy]]` entries (the real printer's address, as the proxy uses it). The slip
//! (`render::escpos_slip`, QR by the printer's own command) goes over a connection of its own;
//! a raw-port printer serves one connection at a time, so it never interleaves with a till's job.

use crate::config::Config;
use crate::render::{escpos_slip, SlipOptions};
use loyalty_store::vouchers::IssuedVoucher;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long the printer may take to accept the connection and the slip.
const PRINT_TIMEOUT: Duration = Duration::from_secs(5);

/// A printer staff may print on.
#[derive(Debug, Clone)]
pub struct Printer {
    /// The proxy's name (shown on the button).
    pub name: String,
    /// The lane it belongs to.
    pub lane: String,
    /// The real printer, `host:port`.
    pub address: String,
}

/// The printers of the configuration (none: the page shows no print button).
pub fn printers(config: &Config) -> Vec<Printer> {
    config
        .printer_proxy
        .iter()
        .map(|proxy| Printer {
            name: proxy.name.clone(),
            lane: proxy.lane.clone(),
            address: proxy.printer.clone(),
        })
        .collect()
}

/// Prints `voucher`'s slip on `printer`. The error says what to check.
pub async fn print(
    printer: &Printer,
    voucher: &IssuedVoucher,
    time_zone: jiff::tz::TimeZone,
) -> Result<(), String> {
    let options = SlipOptions {
        time_zone,
        ..Default::default()
    };
    let slip = escpos_slip(&voucher.voucher, &voucher.text, &options)
        .map_err(|err| format!("the slip could not be made: {err}"))?;
    let send = async {
        let mut stream = tokio::net::TcpStream::connect(&printer.address).await?;
        stream.write_all(&slip).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(PRINT_TIMEOUT, send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!(
            "printer {} ({}) refused the slip: {err}; is it on and connected?",
            printer.name, printer.address
        )),
        Err(_) => Err(format!(
            "printer {} ({}) did not answer within {} s; is it on and connected?",
            printer.name,
            printer.address,
            PRINT_TIMEOUT.as_secs()
        )),
    }
}
