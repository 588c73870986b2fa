//! "A scan arrives": identify the card (look up locally, then at the CRM within
//! `crm.lookup_timeout_ms`, or enroll offline), update the lane session and answer `customer` /
//! `enrolled`; a voucher scan answers `reward`.

use super::*;
use crate::sync::lookup::LookupOutcome;
use loyalty_store::Refused;

/// Looks a program card up, enrolling it offline when unknown. Returns the customer and
/// whether it was enrolled now.
pub(super) fn identify_blocking(
    store: &Store,
    card: &str,
    enroll_unknown: bool,
    now: Timestamp,
) -> Result<(loyalty_core::customer::Customer, bool), StoreError> {
    match store.customer_by_card(card)? {
        Some(customer) => Ok((customer, false)),
        None if enroll_unknown => store.enroll(card, now).map(|customer| (customer, true)),
        None => Err(StoreError::Refused(Refused::UnknownCustomer(format!(
            "card {card}"
        )))),
    }
}

/// [`identify_blocking`] and the customer's balance, in one trip to the storage threads. A card
/// the store does not know is first looked up at the CRM (when sync runs and is not known to be
/// down), within `crm.lookup_timeout_ms`: a customer the CRM knows is taken over with her
/// chain-wide id and balance (answered `customer`); a 404, a timeout or any error enrolls the
/// card offline as without a CRM. Only this lane waits for the lookup (each lane is its own
/// task), and never longer than the timeout.
pub(super) async fn identify_with_balance(
    shared: &Shared,
    card: &str,
    time: TrustedTime,
) -> Result<(loyalty_core::customer::Customer, bool, i64), StoreError> {
    let store = shared.store.stamped(time.trusted);
    let now = time.now;
    let card = card.to_string();
    let enroll_unknown = shared.enroll_unknown;
    let Some(lookup) = shared.sync.card_lookup() else {
        return blocking(move || {
            let (customer, enrolled) = identify_blocking(&store, &card, enroll_unknown, now)?;
            let balance = store.balance(&customer.id, now).map(|b| b.total)?;
            Ok((customer, enrolled, balance))
        })
        .await;
    };
    let known = {
        let store = store.clone();
        let card = card.clone();
        blocking(move || match store.customer_by_card(&card)? {
            Some(customer) => {
                let balance = store.balance(&customer.id, now).map(|b| b.total)?;
                Ok(Some((customer, false, balance)))
            }
            None => Ok::<_, StoreError>(None),
        })
        .await?
    };
    if let Some(known) = known {
        return Ok(known);
    }
    let found = match lookup.lookup(&card).await {
        LookupOutcome::Found(customer) => Some(crate::sync::feed::crm_customer(customer)),
        LookupOutcome::NotFound | LookupOutcome::Skipped | LookupOutcome::Failed(_) => None,
    };
    blocking(move || {
        let adopted = match found {
            Some(found) => match store.adopt_crm_customer(&card, &found, now) {
                Ok(customer) => Some(customer),
                Err(err) if err.is_refusal() => {
                    tracing::warn!(card = %card, error = %err, "the CRM's answer for a card was refused; enrolling it offline");
                    None
                }
                Err(err) => return Err(err),
            },
            None => None,
        };
        let (customer, enrolled) = match adopted {
            Some(customer) => (customer, false),
            None => identify_blocking(&store, &card, enroll_unknown, now)?,
        };
        let balance = store.balance(&customer.id, now).map(|b| b.total)?;
        Ok((customer, enrolled, balance))
    })
    .await
}

pub(super) async fn on_scan(
    lane: &str,
    data: &[u8],
    _origin: &Origin,
    session: &mut LaneSession,
    shared: &Shared,
) -> Vec<Response> {
    let time = input_time(shared);
    let now = time.now;
    let scan = match loyalty_core::scan::decode(data, &shared.cards) {
        Ok(scan) => scan,
        Err(err) => return vec![Response::error(lane, None, err.code(), err.to_string())],
    };
    match scan {
        Scan::Card { number, .. } => {
            let (customer, enrolled, balance) =
                match identify_with_balance(shared, &number, time).await {
                    Ok(found) => found,
                    Err(err) => return vec![refusal_or_storage(lane, None, &err)],
                };
            if enrolled {
                shared
                    .counters
                    .enrolled
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let screen = {
                let store = shared.store.clone();
                let vouchers = shared.vouchers.clone();
                let customer_id = customer.id.clone();
                let tier = customer.tier.clone();
                let time_zone = shared.time_zone.clone();
                blocking(move || {
                    read_screen(
                        &store,
                        &vouchers,
                        &customer_id,
                        tier.as_deref(),
                        &time_zone,
                        now,
                    )
                })
                .await
            };
            let screen = match screen {
                Ok(screen) => screen,
                Err(err) => return vec![refusal_or_storage(lane, None, &err)],
            };
            let who = Identified {
                customer_id: customer.id.clone(),
                card: number.clone(),
            };
            match session.on_card(who, now) {
                CardDecision::HoldForNextReceipt { replaced } => {
                    vec![customer_answer(
                        lane, &customer, &number, balance, enrolled, replaced, screen,
                    )]
                }
                CardDecision::AttachTo { receipt_id } => {
                    let mut answers = vec![customer_answer(
                        lane, &customer, &number, balance, enrolled, None, screen,
                    )];
                    let store = shared.store.stamped(time.trusted);
                    let rules = current_rules(shared);
                    let customer_id = customer.id.clone();
                    let attach_id = receipt_id.clone();
                    match blocking(move || {
                        store.attach_customer(&attach_id, &customer_id, rules.as_ref(), now)
                    })
                    .await
                    {
                        Ok(outcome) => {
                            shared
                                .counters
                                .points
                                .fetch_add(outcome.earned, std::sync::atomic::Ordering::Relaxed);
                            answers.push(points_answer(lane, &outcome));
                        }
                        Err(err) => answers.push(refusal_or_storage(lane, Some(&receipt_id), &err)),
                    }
                    answers
                }
            }
        }
        Scan::Voucher { text } => {
            // Named in every answer, refusals included, whenever its text decodes.
            let voucher_id = loyalty_core::voucher::decode(text.trim())
                .ok()
                .map(|signed| signed.voucher.id.to_string());
            let vouchers = shared.vouchers.stamped(time.trusted);
            let lane_name = lane.to_string();
            let customer = session.held_card(now).map(|who| who.customer_id.clone());
            let verdict =
                blocking(move || vouchers.scan(&text, &lane_name, customer.as_deref(), now)).await;
            vec![reward_answer(lane, voucher_id, verdict)]
        }
        other => {
            let (code, message) = other
                .refusal()
                .unwrap_or(("unknown_card", "not a card of this program".into()));
            vec![Response::error(lane, None, code, message)]
        }
    }
}

pub(super) fn current_rules(shared: &Shared) -> Arc<RulesPolicy> {
    match shared.rules.read() {
        Ok(rules) => rules.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

pub(super) fn customer_answer(
    lane: &str,
    customer: &loyalty_core::customer::Customer,
    card: &str,
    balance: i64,
    enrolled: bool,
    replaced_card: Option<String>,
    screen: ScreenRead,
) -> Response {
    let mut answer = if enrolled {
        Response::Enrolled {
            lane: lane.to_string(),
            customer_id: customer.id.clone(),
            card: card.to_string(),
            tier: customer.tier.clone().unwrap_or_else(|| "basic".into()),
            balance,
            replaced_card,
            screen: screen.screen,
        }
    } else {
        Response::Customer {
            lane: lane.to_string(),
            customer_id: customer.id.clone(),
            card: card.to_string(),
            name: customer.name.clone().filter(|_| screen.show_name),
            tier: customer.tier.clone().unwrap_or_else(|| "basic".into()),
            balance,
            replaced_card,
            screen: screen.screen,
        }
    };
    answer.fit_screen();
    answer
}

pub(super) fn points_answer(lane: &str, outcome: &ReceiptOutcome) -> Response {
    Response::Points {
        lane: lane.to_string(),
        receipt_id: outcome.receipt_id.clone(),
        customer_id: outcome.customer_id.clone(),
        earned: outcome.earned,
        balance: outcome.balance.map(|b| b.total),
        duplicate: outcome.duplicate,
        vouchers: Vec::new(),
        unknown_categories: Vec::new(),
        redemptions: Vec::new(),
    }
}

pub(super) fn storage_error(lane: &str, receipt_id: Option<&str>, err: &StoreError) -> Response {
    tracing::error!(lane, error = %err, "storage failure");
    Response::error(
        lane,
        receipt_id,
        "storage",
        "the gateway could not store this; the till should retry",
    )
}

pub(super) fn refusal_or_storage(
    lane: &str,
    receipt_id: Option<&str>,
    err: &StoreError,
) -> Response {
    if err.is_refusal() {
        Response::error(lane, receipt_id, "refused", err.to_string())
    } else {
        storage_error(lane, receipt_id, err)
    }
}

/// The `reward` answer to a voucher scan; `voucher_id` is the id its text decoded to (`None`:
/// the text could not be read at all, and the answer's id is empty).
pub(super) fn reward_answer(
    lane: &str,
    voucher_id: Option<String>,
    verdict: Result<Verdict, StoreError>,
) -> Response {
    match verdict {
        Ok(Verdict::Valid { discount }) => {
            let decimals = loyalty_core::money::currency_decimals(&discount.currency);
            Response::Reward {
                lane: lane.to_string(),
                voucher_id: discount.voucher_id.to_string(),
                status: "valid".into(),
                discount: Some(match discount.benefit {
                    Benefit::AmountOff(amount) => DiscountJson::AmountOff {
                        amount: amount.format(decimals),
                    },
                    Benefit::PercentOff(percent) => DiscountJson::PercentOff {
                        percent: u32::from(percent),
                    },
                    Benefit::FreeItem { sku } => DiscountJson::FreeItem { sku },
                }),
                reason: discount
                    .min_spend
                    .filter(|m| m.0 > 0)
                    .map(|m| format!("minimum spend {}", m.format(decimals))),
            }
        }
        Ok(Verdict::Refused(refusal)) => Response::Reward {
            lane: lane.to_string(),
            voucher_id: voucher_id.unwrap_or_default(),
            status: refusal.status().into(),
            discount: None,
            reason: Some(format!("{} ({})", refusal, refusal.code())),
        },
        Err(err) => storage_error(lane, None, &err),
    }
}
