//! Who may open one more connection: the broker's total (`connection_count_max`, shared by the
//! native and the Kafka listener) and each client address's share of it
//! (`connection_count_per_address_max`), so one host cannot take every connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The connection limits of one broker.
#[derive(Debug)]
pub(crate) struct Admission {
    total: Arc<Semaphore>,
    total_max: u32,
    per_address: Mutex<HashMap<IpAddr, u32>>,
    per_address_max: u32,
}

/// A connection let in; dropping it gives its place back.
#[derive(Debug)]
pub(crate) struct Admitted {
    admission: Arc<Admission>,
    address: IpAddr,
    _permit: OwnedSemaphorePermit,
}

/// Why a connection was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The broker holds its most connections.
    #[error("the broker is at its limit of {limit} connections; try again later")]
    Total {
        /// `connection_count_max`.
        limit: u32,
    },
    /// This client address holds its most connections.
    #[error("{address} already has {limit} connections, the most one client address may have")]
    Address {
        /// The client's address.
        address: IpAddr,
        /// `connection_count_per_address_max`.
        limit: u32,
    },
}

impl Admission {
    pub(crate) fn new(total_max: u32, per_address_max: u32) -> Arc<Self> {
        Arc::new(Self {
            total: Arc::new(Semaphore::new(total_max as usize)),
            total_max,
            per_address: Mutex::new(HashMap::new()),
            per_address_max,
        })
    }

    /// Lets a connection from `address` in, or says which limit it is over.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Admitted, Refused> {
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| Refused::Total { limit: self.total_max })?;
        let mut per_address = self.per_address.lock().unwrap_or_else(PoisonError::into_inner);
        let held = per_address.entry(address).or_insert(0);
        if *held >= self.per_address_max {
            if *held == 0 {
                per_address.remove(&address);
            }
            return Err(Refused::Address { address, limit: self.per_address_max });
        }
        *held += 1;
        Ok(Admitted { admission: Arc::clone(self), address, _permit: permit })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_address =
            self.admission.per_address.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = per_address.get_mut(&self.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                // Forgotten when its last connection closes: the map holds only live addresses.
                per_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_and_the_total_holds() {
        let admission = Admission::new(3, 2);
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refused::Address { address: a, limit: 2 });
        let _other = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refused::Total { limit: 3 });
        drop(first);
        let _again = admission.admit(a).unwrap();
        // Both limits reached: the total is checked first.
        assert_eq!(admission.admit(a).unwrap_err(), Refused::Total { limit: 3 });
    }

    #[test]
    fn closed_connections_leave_no_entry() {
        let admission = Admission::new(8, 8);
        let address: IpAddr = "::1".parse().unwrap();
        drop((admission.admit(address).unwrap(), admission.admit(address).unwrap()));
        assert!(admission.per_address.lock().unwrap().is_empty());
    }
}
